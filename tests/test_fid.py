"""FID (pytorch-fid's FID Inception), LSE and L1 evaluation of the Wav2Lip generator, and the training hook (CPU).

The published ``pt_inception-2015-12-05-6726825d.pth`` cannot be downloaded here: every FID Inception in
this file has *random* weights (seeded), saved in the published layout (a bare state dict of 472 tensors,
no ``num_batches_tracked``).  Random convolutions get He-normal weights so that features keep a usable scale
through the 94 layers (PyTorch's default init shrinks them to ~1e-8).  SyncNet, the expert and the
generator are random too (seeded): the numbers are checked for being finite, deterministic and consistent,
not for being good.  In the generator tests the FID network reads 99 x 99 inputs and keeps its first 64
features (``_Truncated``): 299 x 299 costs 9x more on CPU, and scipy's ``sqrtm`` of a 2048 x 2048 product
takes 20-30 s on this 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from torchvision.models.inception import InceptionA, InceptionC, InceptionE

from conftest import shared
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)
from test_train_wav2lip import expert_ckpt  # noqa: F401  (a random expert in the published layout)
from lipsync.media import FrameReader

GRID = "bbaf2n.mpg"
CROP = (95, 105, 215, 225)  # x1, y1, x2, y2: GRID speakers sit centred; a fixed square around the face
FPS, SR, SIZE = 25, 16000, 96
SMALL = 99  # FID input size in the generator tests: the network is size-agnostic, 299 is 9x slower on CPU
FEATURES = 64  # feature dimensions kept in the generator tests: scipy's sqrtm of 2048 x 2048 takes 20-30 s here


# --------------------------------------------------------------------------- fixtures


def _random_inception(seed: int = 0):
    from lipsync.train.fid import FIDInception

    torch.manual_seed(seed)
    m = FIDInception()
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    return m.eval()


def _published_layout(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> Path:
    """A random FID Inception as a bare state dict in the published layout, under the published file name."""
    path = tmp_path_factory.mktemp("fid-weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_published_layout(_random_inception(0)), path)
    return path


class _Truncated(nn.Module):
    """The FID Inception at a small input size, keeping its first FEATURES features (see the module doc)."""

    def __init__(self, inception: nn.Module) -> None:
        from dataclasses import replace

        super().__init__()
        self.inception = inception
        self.contract = replace(inception.contract, input_size=SMALL, feature_dim=FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception(x)[:, :FEATURES]


def _write_dataset(root: Path, spans: dict[str, tuple[int, int, str]]) -> Path:
    """Clips ``id -> (first frame, end frame, split)`` of one GRID sentence, in the documented format."""
    import cv2

    video = shared("grid-talking-faces", GRID)
    x1, y1, x2, y2 = CROP
    crops = [cv2.resize(f[y1:y2, x1:x2], (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in FrameReader(video)]
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-vn", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    pcm16 = np.frombuffer(pcm, np.int16)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    clips = []
    for cid, (a, b, split) in spans.items():
        faces = np.stack(crops[a:b]).astype(np.uint8)
        n = len(faces)
        np.save(root / "clips" / f"{cid}.faces.npy", faces)
        audio = pcm16[a * SR // FPS :][: n * SR // FPS]
        audio = np.pad(audio, (0, n * SR // FPS - len(audio)))
        sf.write(root / "clips" / f"{cid}.wav", audio, SR, subtype="PCM_16")
        clips.append({"id": cid, "film": "bbaf2n", "character": f"speaker-{split}", "split": split, "frames": n,
                      "faces": f"clips/{cid}.faces.npy", "audio": f"clips/{cid}.wav",
                      "source": {"shot": "shot-0001", "track": "t0", "film_frames": [a, b], "film_fps": [FPS, 1]}})
    frames = sum(c["frames"] for c in clips)
    doc = {"schema": "dub-film/dataset@1", "fps": FPS, "sample_rate": SR, "face_size": SIZE, "clips": clips,
           "counts": {"clips": len(clips), "frames": frames}, "hours": {"train": frames / FPS / 3600}}
    (root / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two 9-frame train clips (one trainable window each), a 16-frame val clip (2 windows with real audio under
    them), a 5-frame (unusable: no other reference window) holdout clip."""
    return _write_dataset(tmp_path_factory.mktemp("fid-dataset"), {
        "tr0": (0, 9, "train"), "tr1": (10, 19, "train"), "val0": (30, 46, "val"), "short": (60, 65, "holdout")})


# --------------------------------------------------------------------------- the network and its weights


def test_random_fid_inception_loads_strictly_through_the_model_store(inception_file, tmp_path):
    from lipsync import store
    from lipsync.store import _FID_META
    from lipsync.train.fid import FID_STATE_DICT_KEYS, FIDCheckpointError, load_fid_inception

    published = torch.load(inception_file, map_location="cpu", weights_only=True)
    assert len(published) == FID_STATE_DICT_KEYS == _FID_META["state_dict_keys"] == 472
    assert not any(k.endswith("num_batches_tracked") for k in published) and "fc.weight" in published
    assert tuple(published["fc.weight"].shape) == (1008, 2048) and not any(k.startswith("AuxLogits") for k in published)

    st = tmp_path / "store"
    pulled = store.pull("fid_inception", st, source=inception_file, allow_unverified=True)
    path = store.resolve("fid_inception", st)
    assert path == pulled and path.name == "pt_inception-2015-12-05-6726825d.pth"
    model = load_fid_inception(path)
    assert not model.training
    got = model.state_dict()
    for k, v in published.items():
        assert torch.equal(got[k], v), k

    # {"state_dict": ...} with "module." and with the counters: the same weights.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _random_inception(0).state_dict().items()}}, wrapped)
    again = load_fid_inception(wrapped).state_dict()
    assert all(torch.equal(again[k], v) for k, v in published.items())

    # One key short: refused, naming the file and the count.
    short = dict(published)
    del short["Mixed_6b.branch7x7_2.bn.running_var"]
    bad = tmp_path / "short.pth"
    torch.save(short, bad)
    with pytest.raises(FIDCheckpointError, match=r"short\.pth.*1 missing keys.*Mixed_6b\.branch7x7_2\.bn\.running_var.*0 unexpected"):
        load_fid_inception(bad)
    extra = tmp_path / "extra.pth"
    torch.save({**published, "AuxLogits.fc.weight": torch.zeros(1008, 768)}, extra)
    with pytest.raises(FIDCheckpointError, match=r"extra\.pth.*0 missing keys.*1 unexpected keys"):
        load_fid_inception(extra)


def _same_weights(ours: nn.Module, stock: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for mod in ours.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    stock.load_state_dict(ours.state_dict(), strict=True)
    ours.eval()
    stock.eval()


def _border(h: int, w: int) -> torch.Tensor:
    m = torch.ones(h, w, dtype=torch.bool)
    m[1:-1, 1:-1] = False
    return m


@pytest.mark.parametrize("kind", ["A", "C", "E_1"])
def test_average_pool_variants_differ_from_torchvision_only_at_the_borders(kind):
    """count_include_pad=False changes the pool branch where the 3x3 window overlaps the padding, nowhere else."""
    from lipsync.train.fid import FIDInceptionA, FIDInceptionC, FIDInceptionE_1

    torch.manual_seed(1)
    if kind == "A":
        ours, stock, cin, pool = FIDInceptionA(192, pool_features=32), InceptionA(192, pool_features=32), 192, 32
    elif kind == "C":
        ours, stock, cin, pool = FIDInceptionC(768, channels_7x7=128), InceptionC(768, channels_7x7=128), 768, 192
    else:
        ours, stock, cin, pool = FIDInceptionE_1(1280), InceptionE(1280), 1280, 192
    _same_weights(ours, stock, 2)
    x = torch.rand(2, cin, 7, 7) + 0.5  # positive: the padding's zeros pull torchvision's border means down
    with torch.no_grad():
        a, b = ours(x), stock(x)
    assert a.shape == b.shape
    assert torch.equal(a[:, :-pool], b[:, :-pool])  # the other branches are the same computation
    inner = ~_border(7, 7)
    assert torch.equal(a[:, -pool:, inner], b[:, -pool:, inner])
    diff = (a[:, -pool:] - b[:, -pool:]).abs()[:, :, _border(7, 7)]
    assert diff.max() > 1e-3 and (diff.amax(dim=(0, 1)) > 0).float().mean() > 0.9  # (almost) every border pixel


def test_mixed_7c_max_pool_differs_from_torchvision_everywhere():
    from lipsync.train.fid import FIDInceptionE_2

    torch.manual_seed(3)
    ours, stock = FIDInceptionE_2(2048), InceptionE(2048)
    _same_weights(ours, stock, 4)
    x = torch.rand(2, 2048, 8, 8)
    with torch.no_grad():
        a, b = ours(x), stock(x)
    assert torch.equal(a[:, :-192], b[:, :-192])
    inner = (a[:, -192:] - b[:, -192:]).abs()[:, :, 1:-1, 1:-1]
    assert (inner.amax(dim=(0, 1)) > 1e-4).all()  # a max pool, not a mean: the interior differs too
    # and it is the max pool: recompute the branch by hand
    with torch.no_grad():
        bp = ours.branch_pool(torch.nn.functional.max_pool2d(x, 3, 1, 1))
    assert torch.equal(a[:, -192:], bp)


def test_fid_inception_returns_pool3_features():
    from lipsync.train.fid import FIDInception, FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    m = _random_inception(5)
    assert all(type(getattr(m, f"Mixed_5{c}")) is FIDInceptionA for c in "bcd")
    assert all(type(getattr(m, f"Mixed_6{c}")) is FIDInceptionC for c in "bcde")
    assert type(m.Mixed_7b) is FIDInceptionE_1 and type(m.Mixed_7c) is FIDInceptionE_2 and m.AuxLogits is None
    assert FIDInception.contract.input_size == 299 and FIDInception.contract.feature_dim == 2048
    seen = {}
    m.Mixed_7c.register_forward_hook(lambda mod, inp, out: seen.setdefault("7c", out))
    m.fc.register_forward_hook(lambda mod, inp, out: seen.setdefault("fc", out))
    x = torch.rand(2, 3, 75, 75) * 2 - 1  # the smallest input the layout takes
    with torch.no_grad():
        f = m(x)
    assert f.shape == (2, 2048) and "fc" not in seen
    torch.testing.assert_close(f, seen["7c"].mean(dim=(2, 3)))


def test_preprocess_follows_the_contract():
    from lipsync.train.fid import FIDContract, preprocess

    crop = np.zeros((1, 96, 96, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 0, 51, 255  # B, G, R
    x = preprocess(crop)
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 0], torch.full((299, 299), 1.0))  # R first
    torch.testing.assert_close(x[0, 1], torch.full((299, 299), 51 / 255 * 2 - 1))
    torch.testing.assert_close(x[0, 2], torch.full((299, 299), -1.0))
    # Bilinear, align_corners=False: a 2x2 checker upsampled to 4x4 has 1/4-3/4 blends at the centre
    small = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 0]]], np.uint8)[None]
    y = preprocess(small, FIDContract(input_size=4))
    want = (torch.tensor([[0, 0.25, 0.75, 1], [0.25, 0.375, 0.625, 0.75], [0.75, 0.625, 0.375, 0.25], [1, 0.75, 0.25, 0]]))
    torch.testing.assert_close((y[0, 0] + 1) / 2, want)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(crop.astype(np.float32))


# --------------------------------------------------------------------------- statistics


def test_frechet_distance_matches_closed_forms(monkeypatch):
    from lipsync.train.fid import frechet_distance

    rng = np.random.default_rng(0)
    d = 50
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    want = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(want, rel=1e-10)

    def spd(n: int) -> np.ndarray:
        a = rng.normal(size=(n, n))
        return a @ a.T / n + 0.05 * np.eye(n)

    d = 40
    s1, s2 = spd(d), spd(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T  # the symmetric root of s1
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))  # Tr sqrt(sqrt(s1) s2 sqrt(s1))
    want = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    got = frechet_distance(m1, s1, m2, s2)
    assert got == pytest.approx(want, rel=1e-8) and got > 0
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-6
    assert frechet_distance(m1, s1, m2, s1) == pytest.approx(np.sum((m1 - m2) ** 2), rel=1e-6)

    # Singular covariances (10 samples in 40 dimensions): a finite distance, the means' part when the spreads agree.
    x = rng.normal(size=(10, d))
    s = np.cov(x, rowvar=False)
    assert np.linalg.matrix_rank(s) < d
    got = frechet_distance(m1, s, m2, s)
    assert np.isfinite(got) and got == pytest.approx(np.sum((m1 - m2) ** 2), abs=1e-3)

    # When sqrtm fails, eps * I is added to both covariances (only inside the root; the traces are the given ones).
    import scipy.linalg

    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def failing_once(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    m1, m2, v1, v2 = m1[:5], m2[:5], rng.uniform(0.1, 2.0, 5), rng.uniform(0.1, 2.0, 5)
    with monkeypatch.context() as mp:
        mp.setattr(scipy.linalg, "sqrtm", failing_once)
        got = frechet_distance(m1, np.diag(v1), m2, np.diag(v2), eps=0.01)
    assert len(calls) == 2
    want = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt((v1 + 0.01) * (v2 + 0.01)))
    assert got == pytest.approx(want, rel=1e-10)

    with pytest.raises(ValueError, match="imaginary"):  # no real root: S2 negative definite
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats_streams_uneven_batches():
    from lipsync.train.fid import FeatureStats

    rng = np.random.default_rng(1)
    x = rng.normal(size=(103, 16)) * rng.uniform(0.5, 3, 16) + 1e4  # a large mean: centring keeps the covariance exact
    stats = FeatureStats()
    a = 0
    for n in (1, 7, 0, 50, 45):
        batch = x[a : a + n]
        stats.update(torch.from_numpy(batch) if n == 50 else batch)
        a += n
    assert a == len(x) and stats.count == 103 and stats.dim == 16
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    one = FeatureStats().update(x[:1])
    with pytest.raises(ValueError, match="at least 2"):
        one.cov
    with pytest.raises(ValueError, match="17-d"):
        stats.update(np.zeros((2, 17)))


# --------------------------------------------------------------------------- the generator


@pytest.fixture(scope="module")
def models():
    from lipsync.models.syncnet import SyncNet
    from lipsync.models.wav2lip import Wav2Lip

    torch.manual_seed(7)
    generator = Wav2Lip()
    torch.manual_seed(8)
    syncnet = SyncNet().eval()
    return generator, _Truncated(_random_inception(9)).eval(), syncnet


@pytest.fixture(scope="module")
def evaluated(dataset, models):
    from lipsync.train.data import TrainingSet
    from lipsync.train.fid import evaluate_generator

    generator, fid_model, syncnet = models
    generator.train()
    ds = TrainingSet(dataset)  # every split: evaluate_generator keeps "val"
    t0 = time.perf_counter()
    first = evaluate_generator(generator, ds, fid_model=fid_model, syncnet=syncnet, split="val", max_windows=64,
                               batch_size=2, seed=0)
    seconds = time.perf_counter() - t0
    mode = generator.training
    second = evaluate_generator(generator, dataset, fid_model=fid_model, syncnet=syncnet, split="val", max_windows=64,
                                batch_size=2, seed=0)
    return first, second, mode, seconds


def test_evaluate_generator_on_the_val_split(evaluated, dataset):
    from lipsync.train.data import TrainingSet
    from lipsync.train.wav2lip import GeneratorSampler

    first, second, mode, seconds = evaluated
    print(f"\nevaluate_generator, {first['frames']} frames (CPU): {seconds:.1f} s: {first}")
    val = TrainingSet(dataset, split="val")
    (clip, n_starts), = GeneratorSampler(val).clips
    windows = len(range(0, n_starts, 5))  # consecutive windows from frame 0 while a target can start there
    assert set(first) == {"split", "windows", "frames", "fid", "lse_d", "lse_c", "l1"}
    assert first["split"] == "val" and first["windows"] == windows == 2 and first["frames"] == 5 * windows
    assert all(np.isfinite(first[k]) for k in ("fid", "lse_d", "lse_c", "l1"))
    assert first["fid"] > 0 and first["lse_d"] > 0 and first["lse_c"] >= 0 and 0 < first["l1"] < 1
    assert mode is True  # restored after the eval-mode pass
    assert second == first  # deterministic (the dataset given as a path this time)


def test_fid_of_the_real_crops_against_themselves_is_zero(evaluated, dataset, models):
    from lipsync.train.data import TrainingSet
    from lipsync.train.fid import fid

    first = evaluated[0]
    _, fid_model, _ = models
    val = TrainingSet(dataset, split="val")
    faces = val.faces(val.clips[0])[: first["frames"]]  # the frames evaluate_generator compared the generated ones with
    batches = [np.asarray(faces[a : a + 4]) for a in range(0, len(faces), 4)]
    same = fid(fid_model, batches, list(reversed(batches)))  # same images, other batches and order
    assert abs(same) < 1e-6 * first["fid"]


def test_evaluate_generator_windows_seed_and_empty_splits(dataset, models):
    from lipsync.train.fid import evaluate_generator

    generator = models[0]
    a = evaluate_generator(generator, dataset, max_windows=1, seed=0)
    b = evaluate_generator(generator, dataset, max_windows=1, seed=1)  # another reference window
    assert a["windows"] == b["windows"] == 1 and a["frames"] == 5
    assert a["fid"] is a["lse_d"] is a["lse_c"] is None and np.isfinite(a["l1"])
    assert a["l1"] != b["l1"]
    empty = {"windows": 0, "frames": 0, "fid": None, "lse_d": None, "lse_c": None, "l1": None}
    for split in ("holdout", "test"):  # a 5-frame clip has no reference window; no clip at all
        got = evaluate_generator(generator, dataset, fid_model=models[1], syncnet=models[2], split=split)
        assert got == {"split": split, **empty}


def test_evaluation_inputs_are_the_training_inputs(dataset):
    """The windows evaluated are built exactly as GeneratorSampler.sample builds a training sample."""
    from lipsync.train.data import TrainingSet
    from lipsync.train.fid import _window_inputs
    from lipsync.train.wav2lip import GeneratorSampler

    sampler = GeneratorSampler(TrainingSet(dataset, split="val"), mel_offset=-2)
    for seed in range(3):
        x, indiv, _, y = sampler.sample(np.random.default_rng(seed))
        rng = np.random.default_rng(seed)  # the same draws, by hand
        clip, n = sampler.clips[int(rng.integers(len(sampler.clips)))]
        start = 2 + int(rng.integers(n))
        wrong = int(rng.integers(clip.frames - 5))
        wrong += wrong >= start
        got = _window_inputs(sampler, clip, start, wrong)
        for want, have in zip((x, indiv, y), got):
            np.testing.assert_array_equal(want, have)


# --------------------------------------------------------------------------- the training hook


def test_train_wav2lip_calls_the_evaluator(dataset, expert_ckpt, tmp_path):
    from lipsync.train.fid import evaluate_generator
    from lipsync.train.wav2lip import train_wav2lip

    calls: list[tuple[int, bool]] = []

    def evaluator(generator: nn.Module, step: int) -> dict:
        assert not isinstance(generator, nn.parallel.DistributedDataParallel)
        out = evaluate_generator(generator, dataset, max_windows=1)
        calls.append((step, generator.training))
        generator.eval()  # left in eval mode on purpose: the hook must restore train mode
        return out

    logged: list[dict] = []
    kw = dict(expert_checkpoint=expert_ckpt, batch_size=1, device="cpu", seed=0, log=logged.append, evaluator=evaluator)
    res = train_wav2lip(dataset, tmp_path / "every", steps=2, evaluate_every=1, **kw)
    assert [s for s, _ in calls] == [1, 2] and res.generator.training
    lines = [json.loads(x) for x in (tmp_path / "every" / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(r["split"] == "val" and r["windows"] == 1 and np.isfinite(r["l1"]) and r["fid"] is None for r in evals)
    assert [r.get("event", "step") for r in lines] == ["start", "step", "eval", "step", "eval"]
    assert [r for r in logged if r.get("event") == "eval"] == evals
    steps = [r for r in lines if "loss" in r]
    print(f"\n2 steps (batch 1, CPU) + 2 evaluations of 5 frames: step_s {[r['step_s'] for r in steps]}, "
          f"eval_s {[r['eval_s'] for r in evals]}")
    with pytest.raises(ValueError, match="evaluate_every"):
        train_wav2lip(dataset, tmp_path / "bad", steps=1, evaluate_every=0, **kw)


def test_cli_evaluates_without_fid_weights_in_the_store(dataset, expert_ckpt, tmp_path):
    """`dub train wav2lip` evaluates once per epoch by default (2 train clips, batch 1: after step 2, not 1);
    entries missing from the store are skipped with one warning each; a weights path that does not exist is an error."""
    from typer.testing import CliRunner

    from dub.cli import app

    out = tmp_path / "run"
    args = ["train", "wav2lip", str(dataset), "--expert", str(expert_ckpt), "--out", str(out), "--steps", "2",
            "--batch-size", "1", "--device", "cpu", "--eval-windows", "1",
            "--store", str(tmp_path / "empty-store")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("warning: FID skipped") == 1 and r.output.count("warning: LSE-D/LSE-C skipped") == 1
    assert "dub models pull fid_inception" in r.output and "eval at step 2 (val, 1 windows)" in r.output
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r.get("event", "step"), r["step"]) for r in lines] == [("start", 0), ("step", 1), ("step", 2), ("eval", 2)]
    rec = lines[-1]
    assert rec["fid"] is None and rec["lse_d"] is None and rec["windows"] == 1 and np.isfinite(rec["l1"])

    r = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "empty-store"), "--fid-weights", str(tmp_path / "nope.pth")])
    assert r.exit_code == 2 and "nope.pth" in r.output
