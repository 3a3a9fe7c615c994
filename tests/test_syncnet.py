"""SyncNet loads syncnet_python's checkpoint layout strictly, and LSE-D / LSE-C follow the reference evaluation.

No published SyncNet weights are in the shared test data: the network is checked
against the reference's layer shapes with random weights, and the metric against
the reference's formulas (written out here with numpy / scipy) and its input
layout (recorded by a spy network), then end to end on a real GRID clip.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import shared
from dubcore.records import ShotList

GRID_CLIP = ("grid-talking-faces", "bbaf2n.mpg")
SCORED_FRAMES = 40  # a random SyncNet lip pass costs ~70 ms a window on one thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- the reference architecture, written out

# (index in the Sequential, in channels, out channels, kernel) of every conv; each is followed by a
# BatchNorm at index + 1 (weight, bias, running_mean, running_var, num_batches_tracked).
AUDIO_CONVS = [(0, 1, 64, (3, 3)), (4, 64, 192, (3, 3)), (8, 192, 384, (3, 3)), (11, 384, 256, (3, 3)),
               (14, 256, 256, (3, 3)), (18, 256, 512, (5, 4))]
LIP_CONVS = [(0, 3, 96, (5, 7, 7)), (4, 96, 256, (1, 5, 5)), (8, 256, 256, (1, 3, 3)), (11, 256, 256, (1, 3, 3)),
             (14, 256, 256, (1, 3, 3)), (18, 256, 512, (1, 6, 6))]
# fc towers: Linear(512, 512) at 0, BatchNorm1d(512) at 1, ReLU, Linear(512, 1024) at 3.
FC = [(0, 512, 512), (3, 512, 1024)]


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, ch: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (ch,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    for tower, convs in (("netcnnaud", AUDIO_CONVS), ("netcnnlip", LIP_CONVS)):
        for i, cin, cout, k in convs:
            shapes[f"{tower}.{i}.weight"] = (cout, cin, *k)
            shapes[f"{tower}.{i}.bias"] = (cout,)
            bn(f"{tower}.{i + 1}", cout)
    for tower in ("netfcaud", "netfclip"):
        for i, cin, cout in FC:
            shapes[f"{tower}.{i}.weight"] = (cout, cin)
            shapes[f"{tower}.{i}.bias"] = (cout,)
        bn(f"{tower}.1", 512)
    return shapes


def reference_parameter_count() -> int:
    n = 0
    for convs in (AUDIO_CONVS, LIP_CONVS):
        for _i, cin, cout, k in convs:
            n += cout * cin * int(np.prod(k)) + cout + 2 * cout  # conv weight, bias, BN affine
    n += 2 * sum(cout * cin + cout for _i, cin, cout in FC) + 2 * 2 * 512  # two fc towers + their BN affine
    return n


def random_state_dict(seed: int = 1234) -> dict[str, torch.Tensor]:
    """A SyncNet state dict with random weights and BatchNorm statistics, as a plain dict."""
    from lipsync.models.syncnet import SyncNet

    torch.manual_seed(seed)
    model = SyncNet()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    sd = random_state_dict()
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def syncnet(weights_file):
    from lipsync.models.syncnet import load_syncnet

    return load_syncnet(weights_file[0])


# --------------------------------------------------------------------------- the model


def test_architecture_matches_the_reference_layer_shapes(syncnet):
    from lipsync.models.syncnet import SYNCNET_PARAMETERS

    mine = {k: tuple(v.shape) for k, v in syncnet.state_dict().items()}
    assert mine == reference_shapes()
    n_params = sum(p.numel() for p in syncnet.parameters())
    print(f"\nSyncNet parameters: {n_params:,}")
    assert n_params == reference_parameter_count() == SYNCNET_PARAMETERS == 13_631_616
    assert not syncnet.training


def test_published_layout_loads_strictly(weights_file, syncnet, tmp_path):
    from lipsync.models.syncnet import load_syncnet

    _path, sd = weights_file
    got = syncnet.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    # The published file predates BatchNorm's num_batches_tracked: without them it loads the same weights.
    old = tmp_path / "old.model"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, old)
    back = load_syncnet(old).state_dict()
    assert all(torch.equal(back[k], sd[k]) for k in sd if not k.endswith("num_batches_tracked"))


def test_embeddings_have_the_reference_shapes(syncnet):
    torch.manual_seed(0)
    with torch.inference_mode():
        aud = syncnet.forward_aud(torch.randn(2, 1, 13, 20))
        lip = syncnet.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255)
    assert aud.shape == (2, 1024) and lip.shape == (2, 1024)
    assert torch.isfinite(aud).all() and torch.isfinite(lip).all()
    assert not torch.allclose(aud.norm(dim=1), torch.ones(2))  # raw, not normalised


def test_a_file_with_a_missing_key_is_refused_by_name(weights_file, tmp_path):
    from lipsync.models.syncnet import load_syncnet

    _path, sd = weights_file
    bad = tmp_path / "missing_key.model"
    torch.save({k: v for k, v in sd.items() if k != "netfclip.3.bias"}, bad)
    with pytest.raises(ValueError, match=r"missing_key\.model.*netfclip\.3\.bias"):
        load_syncnet(bad)
    extra = tmp_path / "extra_key.model"
    torch.save({**sd, "lossAV.FC.weight": torch.zeros(2, 128)}, extra)
    with pytest.raises(ValueError, match=r"extra_key\.model.*unexpected.*lossAV\.FC\.weight"):
        load_syncnet(extra)
    shape = tmp_path / "shape.model"
    torch.save({**sd, "netfcaud.3.weight": torch.zeros(512, 512)}, shape)
    with pytest.raises(ValueError, match=r"shape\.model.*netfcaud\.3\.weight"):
        load_syncnet(shape)
    text = tmp_path / "notes.model"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.model"):
        load_syncnet(text)


def test_store_entry_matches_the_contract():
    from lipsync.models.syncnet import SYNCNET_PARAMETERS, SyncNet
    from lipsync.store import REQUIRED_META, default_entry

    e = default_entry("syncnet")
    c = SyncNet.contract
    assert e.name == "syncnet_v2" and e.filename == "syncnet_v2.model" and "MIT" in e.license
    assert e.sha256 is None and e.meta["sha256_unverified"]
    assert all(k in e.meta for k in REQUIRED_META["syncnet"])
    assert (e.meta["fps"], e.meta["sample_rate"], e.meta["crop_size"]) == (c.fps, c.sample_rate, c.crop_size)
    assert (e.meta["mfcc_dims"], e.meta["mfcc_steps_per_frame"], e.meta["frames_per_window"]) == (
        c.mfcc_dims, c.mfcc_steps_per_frame, c.frames_per_window)
    assert e.meta["params"] == SYNCNET_PARAMETERS and e.meta["max_offset"] == c.max_offset
    assert c.samples_per_frame * c.fps == c.sample_rate and c.offsets == 31


# --------------------------------------------------------------------------- the metric


def reference_lse(d: np.ndarray) -> tuple[float, float, int, np.ndarray]:
    """The reference's formulas, written out: (LSE-D, LSE-C, offset, framewise confidence)."""
    from scipy import signal

    vshift = (d.shape[1] - 1) // 2
    mdist = d.mean(axis=0)
    k = int(np.argmin(mdist))
    fconf = np.median(mdist) - d[:, k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when the kernel exceeds the signal
        fconfm = signal.medfilt(fconf, kernel_size=9)
    return float(mdist[k]), float(np.median(mdist) - mdist[k]), vshift - k, fconfm


@pytest.mark.parametrize("n_windows", [30, 5])
def test_lse_from_distances_follows_the_reference_formulas(n_windows):
    from lipsync.qc.lse import lse_from_distances

    rng = np.random.default_rng(n_windows)
    d = rng.uniform(9.0, 12.0, size=(n_windows, 31))
    d[:, 19] -= rng.uniform(2.0, 4.0, size=n_windows)  # the audio 4 frames later fits best: offset 15 - 19 = -4
    d[3 % n_windows, 19] += 6.0  # one bad window, so the median filter has something to do
    s = lse_from_distances(d)
    lse_d, lse_c, offset, fconf = reference_lse(d)
    assert s.offset == offset == -4
    assert s.lse_d == pytest.approx(lse_d, abs=1e-12) and s.lse_d == pytest.approx(d[:, 19].mean())
    assert s.lse_c == pytest.approx(lse_c, abs=1e-12) and s.lse_c > 1.5
    assert len(s.mdist) == 31 and s.mdist[19] == pytest.approx(s.lse_d)
    assert len(s.framewise_conf) == n_windows
    np.testing.assert_allclose(s.framewise_conf, fconf, atol=1e-12)
    out = s.to_dict()
    assert (out["offset"], out["windows"], len(out["mdist"])) == (-4, n_windows, 31)


def test_lse_from_distances_offsets_and_errors():
    from lipsync.qc.lse import lse_from_distances

    d = np.full((4, 31), 10.0)
    d[:, 0] = 5.0
    assert lse_from_distances(d).offset == 15  # the earliest audio fits
    d[:, 30] = 5.0
    assert lse_from_distances(d).offset == 15  # ties go to the first shift, as argmin
    for bad in (np.zeros((0, 31)), np.zeros((4, 30)), np.zeros(31), np.full((2, 31), np.nan)):
        with pytest.raises(ValueError):
            lse_from_distances(bad)


def test_calc_pdist_against_numpy():
    from lipsync.qc.lse import calc_pdist

    rng = np.random.default_rng(7)
    lip = rng.normal(size=(23, 1024)).astype(np.float32)
    aud = rng.normal(size=(23, 1024)).astype(np.float32)
    d = calc_pdist(torch.from_numpy(lip), torch.from_numpy(aud), vshift=15)
    assert d.shape == (23, 31) and d.dtype == np.float32
    padded = np.concatenate([np.zeros((15, 1024)), aud.astype(np.float64), np.zeros((15, 1024))])
    want = np.array([[np.linalg.norm(lip[i] - padded[i + k] + 1e-6) for k in range(31)] for i in range(23)])
    np.testing.assert_allclose(d, want, rtol=1e-5)
    # Shift k compares lip window i with audio window i + k - 15; outside the clip, with zeros.
    assert d[0, 0] == pytest.approx(np.linalg.norm(lip[0] + 1e-6), rel=1e-5)
    np.testing.assert_allclose(calc_pdist(lip, aud, vshift=2, chunk=4), want[:, 13:18], rtol=1e-5)


@pytest.fixture(scope="module")
def grid_audio():
    from lipsync.media.audio import load_audio

    return load_audio(shared(*GRID_CLIP), 16000)


def test_syncnet_mfcc_equals_python_speech_features(grid_audio):
    psf = pytest.importorskip("python_speech_features")
    from lipsync.qc.lse import syncnet_mfcc

    pcm = np.clip(np.round(grid_audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    want = psf.mfcc(pcm, 16000)  # the reference's call, on the int16 samples it reads
    got = syncnet_mfcc(grid_audio)
    assert got.shape == want.shape == (297, 13) and got.dtype == np.float32
    diff = np.abs(got.astype(np.float64) - want)
    print(f"\nMFCC max abs diff {diff.max():.3g} (values up to {np.abs(want).max():.1f}; float32 output)")
    # Absolute 1e-6 where |value| <= 1, relative 1e-6 above (float32 keeps ~7 digits of values up to ~50).
    assert np.all(diff <= 1e-6 * np.maximum(1.0, np.abs(want)))
    np.testing.assert_array_equal(syncnet_mfcc(pcm), got)  # int16 PCM is taken as is


def test_crop_face_is_the_reference_pad_and_slice():
    import cv2

    from lipsync.qc.lse import crop_face

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(288, 360, 3), dtype=np.uint8)
    for x, y, s in [(180.3, 140.7, 40.2), (5.5, 3.2, 60.9), (350.0, 280.0, 30.0), (180.0, 140.0, 200.0)]:
        cs = 0.4
        bsi = int(s * (1 + 2 * cs))
        padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=110)
        my, mx = y + bsi, x + bsi
        face = padded[int(my - s) : int(my + s * (1 + 2 * cs)), int(mx - s * (1 + cs)) : int(mx + s * (1 + cs))]
        np.testing.assert_array_equal(crop_face(frame, x, y, s), cv2.resize(face, (224, 224)))


class SpyNet(torch.nn.Module):
    """Records what score_lse feeds the towers; embeddings are cheap functions of the inputs."""

    def __init__(self) -> None:
        from lipsync.models.syncnet import SyncNetContract

        super().__init__()
        self.contract = SyncNetContract()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.lips: list[torch.Tensor] = []
        self.auds: list[torch.Tensor] = []

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        self.lips.append(x.clone())
        return x.mean(dim=(1, 3, 4)).repeat(1, 205)[:, :1024] / 255

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        self.auds.append(x.clone())
        return x.mean(dim=(1, 2))[:, :5].repeat(1, 205)[:, :1024] / 100


def test_score_lse_feeds_the_reference_layout(grid_audio):
    psf = pytest.importorskip("python_speech_features")
    from lipsync.qc.lse import score_lse

    rng = np.random.default_rng(5)
    n = 12
    crops = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    spy = SpyNet()
    s = score_lse(crops, grid_audio, 0, spy, batch_size=5)
    assert s.windows == n - 5  # the reference's lastframe = min_length - 5 (audio is longer than 12 frames)
    lips, auds = torch.cat(spy.lips).numpy(), torch.cat(spy.auds).numpy()
    # The reference: frames stacked on axis 3, (1, 3, T, H, W), window i = frames i..i+4, raw BGR values.
    im = np.transpose(np.expand_dims(np.stack(list(crops), axis=3), 0), (0, 3, 4, 1, 2)).astype(float)
    np.testing.assert_array_equal(lips, np.concatenate([im[:, :, i : i + 5] for i in range(n - 5)]).astype(np.float32))
    # The reference: MFCC of the int16 audio, (1, 1, 13, T), window i = steps 4i..4i+19.
    pcm = np.clip(np.round(grid_audio.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    cc = np.expand_dims(np.expand_dims(psf.mfcc(pcm, 16000).T, 0), 0)
    want = np.concatenate([cc[:, :, :, 4 * i : 4 * i + 20] for i in range(n - 4)]).astype(np.float32)
    np.testing.assert_allclose(auds, want[: n - 5], rtol=1e-6, atol=1e-6)
    # window_rule="all" scores every complete window (one more here).
    assert score_lse(crops, grid_audio, 0, SpyNet(), window_rule="all").windows == n - 4
    # Audio starting later in the array: window 0 then sees the steps from that sample on.  The audio is
    # cut there, as the reference cuts a track's audio with ffmpeg, so the first step's pre-emphasis has
    # no previous sample: only that step differs from the whole clip's MFCC.
    spy2 = SpyNet()
    score_lse(crops, grid_audio, 640 * 3, spy2)
    np.testing.assert_allclose(spy2.auds[0][0, :, :, 1:].numpy(), want[3, :, :, 1:], rtol=1e-6, atol=1e-6)
    cut = psf.mfcc(pcm[640 * 3 :], 16000).T[:, :20]
    np.testing.assert_allclose(spy2.auds[0][0, 0].numpy(), cut, rtol=1e-6, atol=1e-6)
    # Before the array: silence, as the reference's zero-padded audio would give.
    spy3 = SpyNet()
    score_lse(crops, grid_audio, -10_000_000, spy3)
    assert torch.allclose(spy3.auds[0][0, 0, 1:], torch.zeros(12, 20))


def test_score_lse_maps_other_rates_to_25_fps_by_time(grid_audio):
    from lipsync.qc.lse import score_lse

    n = 12
    crops = np.stack([np.full((224, 224, 3), 10 * k, dtype=np.uint8) for k in range(n)])  # frame k has value 10k
    spy = SpyNet()
    s = score_lse(crops, grid_audio, 0, spy, fps=Fraction(30))
    ticks = [int(np.floor((j + 0.5) * 30 / 25)) for j in range(10)]  # round(12 * 25 / 30) = 10 ticks
    assert s.windows == 10 - 5
    shown = torch.cat(spy.lips)[:, 0, :, 0, 0].numpy() / 10  # (windows, 5) source frame of each tick
    np.testing.assert_array_equal(shown, [ticks[i : i + 5] for i in range(5)])


def test_score_lse_refuses_too_few_frames(grid_audio):
    from lipsync.qc.lse import score_lse

    spy = SpyNet()
    with pytest.raises(ValueError, match="too few"):
        score_lse(np.zeros((4, 224, 224, 3), np.uint8), grid_audio, 0, spy, window_rule="all")
    with pytest.raises(ValueError, match="too few"):
        score_lse(np.zeros((5, 224, 224, 3), np.uint8), grid_audio, 0, spy, fps=30, window_rule="all")  # 4 ticks
    assert score_lse(np.zeros((5, 224, 224, 3), np.uint8), grid_audio, 0, spy, window_rule="all").windows == 1
    with pytest.raises(ValueError, match="too few"):  # the reference needs one more frame (min_length - 5)
        score_lse(np.zeros((5, 224, 224, 3), np.uint8), grid_audio, 0, spy)
    assert score_lse(np.zeros((6, 224, 224, 3), np.uint8), grid_audio, 0, spy).windows == 1
    with pytest.raises(ValueError, match="too few"):  # ... and as much audio
        score_lse(np.zeros((6, 224, 224, 3), np.uint8), grid_audio[: 640 * 5], 0, spy)
    with pytest.raises(ValueError, match="224"):
        score_lse(np.zeros((8, 112, 112, 3), np.uint8), grid_audio, 0, spy)


# --------------------------------------------------------------------------- end to end on a GRID clip


@pytest.fixture(scope="module")
def grid_track(face_detector):
    """The face track of the first SCORED_FRAMES frames of the clip (RetinaFace MobileNet-0.25)."""
    from lipsync.faces.pipeline import track_shot_faces
    from lipsync.media.probe import probe

    video = shared(*GRID_CLIP)
    info = probe(video)
    v = info.require_video()
    shot = ShotList.from_cuts(str(video), v.fps, min(SCORED_FRAMES, v.frame_count), []).shots[0]
    tracks = track_shot_faces(video, shot, face_detector, info=info).tracks
    assert tracks, "no face found in the GRID clip"
    return video, info, max(tracks, key=lambda t: t.frames.duration)


def test_score_lse_end_to_end_on_a_grid_clip(grid_track, grid_audio, syncnet):
    from lipsync.qc.lse import syncnet_crops, score_lse

    video, info, track = grid_track
    crops = syncnet_crops(video, track, info=info)
    n = track.frames.duration
    assert crops.shape == (n, 224, 224, 3) and crops.dtype == np.uint8
    assert n >= 30
    # Face crops, not pad: GRID faces sit well inside the 360x288 picture.
    assert 30 < crops.mean() < 220
    s = score_lse(crops, grid_audio, 0, syncnet)
    print(f"\nrandom-weight SyncNet on {n} frames: LSE-D {s.lse_d:.3f} LSE-C {s.lse_c:.3f} offset {s.offset:+d}")
    assert np.isfinite([s.lse_d, s.lse_c, *s.mdist, *s.framewise_conf]).all()
    assert len(s.mdist) == 31 and -15 <= s.offset <= 15
    assert s.windows == len(s.framewise_conf) == n - 5  # syncnet_python: min(n, floor(audio / 640)) - 5
    assert s.lse_d == pytest.approx(min(s.mdist)) and s.lse_c >= 0
