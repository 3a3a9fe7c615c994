"""Wav2Lip's training contract end to end: parity dumps against an independent reference pipeline,
syncnet_python's QC window count, and a paste with no visible seam.

The reference values are computed here from the raw frames and audio, the way Rudrabha/Wav2Lip's
``inference.py`` / ``audio.py`` compute them: crop by the box, ``cv2.resize`` with its default
(bilinear) interpolation, lower half zeroed, mel by librosa with reflect padding, window of frame
``i`` from column ``int(80. * i / fps)``.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import shared
from determinism import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from dub.cli import app
from dubcore.records import FaceObservation, FaceTrack, ShotList
from dubcore.timebase import FrameRange
from lipsync.render.blend import blend_mask, crop_box
from lipsync.render.engine import LipSyncEngine
from lipsync.render.generator import NpzDump
from lipsync.render.params import BlendParams, CropParams, LipSyncParams, TrackDrive
from lipsync.media import FrameReader, probe
from lipsync.qc.seam import border_step as _border_step
from lipsync.media.audio import load_audio
from lipsync.media.synth import make_moving_face
from lipsync.models.wav2lip import Wav2Lip, load_wav2lip

ASTRONAUT_FACE = (179.0, 55.0, 270.0, 178.0)
FRAMES = 6  # a generator pass costs ~0.6 s on one CPU thread




# --------------------------------------------------------------------------- the reference, written out


def reference_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip ``audio.melspectrogram`` with its hparams, on librosa (reflect padding: librosa 0.7's default)."""
    librosa = pytest.importorskip("librosa")
    from scipy import signal

    y = signal.lfilter([1, -0.97], [1], wav)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spec
    s = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def reference_frames(video: Path) -> list[np.ndarray]:
    """BGR frames as the model sees them: the 4:2:0 planes converted by OpenCV."""
    v = probe(video).require_video()
    return [cv2.cvtColor(f.reshape(v.height * 3 // 2, v.width), cv2.COLOR_YUV2BGR_I420)
            for f in FrameReader(video, pix_fmt="yuv420p")]


def check_dump(folder: Path, frames: list[np.ndarray], track: FaceTrack, fps: Fraction, wav: np.ndarray, model: Wav2Lip) -> list[int]:
    """Every dumped frame of ``track`` equals the reference's input, and the output is the model's; returns window starts."""
    files = sorted(folder.glob("frame-*.npz"))
    assert [int(p.stem.split("-")[1]) for p in files] == list(track.frames)
    mel = reference_mel(wav)
    starts = []
    h, w = frames[0].shape[:2]
    for p in files:
        i = int(p.stem.split("-")[1])
        d = np.load(p)
        assert {k: (d[k].shape, d[k].dtype) for k in ("face_input", "mel", "output")} == {
            "face_input": ((6, 96, 96), np.float32), "mel": ((80, 16), np.float32), "output": ((3, 96, 96), np.float32)}
        x1, y1, x2, y2 = (int(v) for v in d["box"])
        assert (x1, y1, x2, y2) == crop_box(track.at(i).box, CropParams(), (w, h), even=True)
        face = cv2.resize(frames[i][y1:y2, x1:x2], (96, 96)).astype(np.float32) / 255.0  # cv2 default: linear
        masked = face.copy()
        masked[48:] = 0.0
        want = np.concatenate([masked, face], axis=2).transpose(2, 0, 1)
        np.testing.assert_allclose(d["face_input"], want, atol=1e-7, rtol=0)
        s = int(i * (80.0 / float(fps)))  # the reference: int(i * mel_idx_multiplier), mel_idx_multiplier = 80. / fps
        starts.append(s)
        assert s + 16 <= mel.shape[1]
        np.testing.assert_allclose(d["mel"], mel[:, s : s + 16], atol=2e-5, rtol=0)
        if p not in (files[0], files[-1]):  # the output is checked on the first and last frame (one pass each)
            continue
        with torch.no_grad():
            out = model(torch.from_numpy(d["mel"][None, None]), torch.from_numpy(d["face_input"][None]))[0].numpy()
        np.testing.assert_allclose(d["output"], out, atol=1e-5, rtol=0)
    return starts


def moving_clip(path: Path, fps: Fraction) -> tuple[Path, FaceTrack]:
    img = cv2.imread(str(shared("face-photos", "astronaut.png")))
    shot = make_moving_face(path, img, ASTRONAUT_FACE, frames=FRAMES, fps=fps)
    shots = ShotList.from_cuts(str(shot.path), fps, FRAMES, [])
    obs = tuple(FaceObservation(i, tuple(float(v) for v in shot.truth[i]), None, 0.99) for i in range(FRAMES))
    return shot.path, FaceTrack("t1", shots.shots[0].id, FrameRange(0, FRAMES), obs)


# --------------------------------------------------------------------------- parity dump


def test_dub_lipsync_dump_equals_the_reference_inputs(tmp_path, checkpoint, model_store):
    """25 fps, two driven faces: one folder per track, every file the reference's input and the model's output."""
    from lipsync.faces.facesfile import write_faces

    fps = Fraction(25)
    video, t1 = moving_clip(tmp_path / "clip.mp4", fps)
    # A second "face" (any picture region) driven from frame 4 on.
    obs2 = tuple(FaceObservation(i, (20.0, 40.0, 120.0, 150.0), None, 0.9) for i in range(4, FRAMES))
    t2 = FaceTrack("t2", t1.shot_id, FrameRange(4, FRAMES), obs2)
    shots = ShotList.from_cuts(str(video), fps, FRAMES, [])
    faces = write_faces(tmp_path / "faces.json", source=str(video), fps=fps, frame_count=FRAMES, shots=shots.shots,
                        tracks=[t1, t2])
    dump, work = tmp_path / "dump", tmp_path / "work"
    result = CliRunner().invoke(app, ["lipsync", str(video), str(shared("grid-talking-faces", "lwbsza.mpg")),
                                      "--out", str(tmp_path / "out.mp4"), "--checkpoint", str(checkpoint),
                                      "--faces", str(faces), "--device", "cpu", "--workdir", str(work),
                                      "--dump", str(dump), "--store", str(model_store)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dump.iterdir()) == ["t1", "t2"]
    wav, sr = sf.read(str(work / "speech16k.wav"), dtype="float32")
    assert sr == 16000 and wav.ndim == 1
    frames = reference_frames(video)
    model = load_wav2lip(checkpoint)
    starts = check_dump(dump / "t1", frames, t1, fps, wav, model)
    assert starts == [int(80 * i / 25) for i in range(FRAMES)] == [0, 3, 6, 9, 12, 16]  # frame 3: 9.6 -> 9, not 10
    check_dump(dump / "t2", frames, t2, fps, wav, model)


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(30000, 1001)], ids=["23.976", "29.97"])
def test_dumped_windows_start_at_the_reference_column(tmp_path, checkpoint, fps):
    video, track = moving_clip(tmp_path / "clip.mp4", fps)
    audio = load_audio(shared("grid-talking-faces", "lwbsza.mpg"), 16000)
    model = load_wav2lip(checkpoint)
    dump = NpzDump(tmp_path / "dump")
    engine = LipSyncEngine(model, "cpu", LipSyncParams(batch_size=4), dump=dump)
    render = engine.render_shot(video, FrameRange(0, FRAMES), [TrackDrive(track, audio)], tmp_path / "seg.mkv")
    assert render.tracks[0].synthesized == FRAMES and dump.written == FRAMES
    starts = check_dump(tmp_path / "dump", reference_frames(video), track, fps, audio, model)
    assert starts == [int(i * 80 / float(fps)) for i in range(FRAMES)]
    # ... which is not the nearest column: the test tells the two apart.
    assert any(s != int(np.floor(i * 80 / float(fps) + 0.5)) for i, s in enumerate(starts))


# --------------------------------------------------------------------------- QC window count


class _Spy(torch.nn.Module):
    """A stand-in SyncNet recording its audio input; embeddings are cheap functions of the inputs."""

    def __init__(self) -> None:
        from lipsync.models.syncnet import SyncNetContract

        super().__init__()
        self.contract = SyncNetContract()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.auds: list[torch.Tensor] = []

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3, 4)).repeat(1, 205)[:, :1024] / 255

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        self.auds.append(x.clone())
        return x.mean(dim=(1, 2))[:, :5].repeat(1, 205)[:, :1024] / 100


def test_qc_window_count_and_pcm_types_follow_syncnet_python():
    from lipsync.qc.lse import score_lse

    clip = shared("grid-talking-faces", "bbaf2n.mpg")
    images = probe(clip).require_video().frame_count
    # The reference's audio: ffmpeg -ac 1 -vn -acodec pcm_s16le -ar 16000, read back as int16.
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-async", "1", "-ac", "1", "-vn", "-ar", "16000",
                          "-f", "s16le", "-"], check=True, capture_output=True).stdout
    pcm = np.frombuffer(raw, np.int16)
    want = min(images, int(np.floor(len(pcm) / 640))) - 5  # SyncNetInstance.evaluate: lastframe = min_length - 5
    assert (images, want) == (75, 69)
    crops = np.random.default_rng(2).integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
    a, b = _Spy(), _Spy()
    s16 = score_lse(crops, pcm, 0, a)
    sf32 = score_lse(crops, (pcm / 32768.0).astype(np.float32), 0, b)
    assert s16.windows == sf32.windows == want
    # int16 PCM and the same samples as float give the same MFCC, hence the same scores.
    torch.testing.assert_close(torch.cat(a.auds), torch.cat(b.auds), rtol=0, atol=0)
    assert s16.lse_d == sf32.lse_d and s16.mdist == sf32.mdist
    with pytest.raises(TypeError, match="int16"):
        score_lse(crops, pcm.astype(np.int32), 0, _Spy())


# --------------------------------------------------------------------------- seamless paste


def test_blend_mask_reaches_zero_inside_the_crop_on_every_side():
    p = BlendParams()
    for h, w in [(16, 16), (33, 33), (96, 96), (180, 180), (257, 240)]:
        m = blend_mask(h, w, p)
        assert m.shape == (h, w, 1) and m.dtype == np.float32 and not m.flags.writeable
        m2 = m[:, :, 0]
        assert m2.max() == pytest.approx(1.0) and m2.min() == 0.0
        # Zero on the outermost row / column of every side, and on a band inside on each side.
        for edge in (m2[0], m2[-1], m2[:, 0], m2[:, -1]):
            assert not edge.any()
        rows, cols = np.nonzero(m2)
        assert rows.min() >= 0.4 * h - 1 and rows.max() <= h - 2 and cols.min() >= 1 and cols.max() <= w - 2
        # No step: the largest change between neighbours is bounded by the ramp (smoothstep, 1.5 / feather px).
        slope = 1.5 / max(1.0, p.feather * max(h, w))
        assert np.abs(np.diff(m2, axis=0)).max() <= slope + 1e-6 and np.abs(np.diff(m2, axis=1)).max() <= slope + 1e-6
        assert blend_mask(h, w, p) is m  # computed once per crop size


def test_no_seam_on_a_real_talking_head(tmp_path, checkpoint, face_detector):
    """A real 512x512 clip driven by other speech with random weights: across the mask border the picture
    moves by less than 3 grey levels (the old mask's hard bottom edge jumped by up to 19)."""
    from lipsync.faces.pipeline import track_film_faces

    clip = shared("talking-heads", "WDA_KatieHill_000.mp4")
    info = probe(clip)
    v = info.require_video()
    n = 8
    (tracking,) = track_film_faces(clip, ShotList.from_cuts(str(clip), v.fps, n, []), face_detector, info=info)
    (track,) = tracking.tracks
    engine = LipSyncEngine(load_wav2lip(checkpoint), "cpu", LipSyncParams(batch_size=8))
    audio = load_audio(shared("talking-heads", "fayu.wav"), 16000)
    from lipsync.render.blend import _chroma_mask

    blend_mask.cache_clear()
    _chroma_mask.cache_clear()  # an earlier render of the same clip in this process would have filled it
    render = engine.render_shot(clip, FrameRange(0, n), [TrackDrive(track, audio)], tmp_path / "seg.mkv", info=info)
    assert render.tracks[0].synthesized == n
    boxes = [crop_box(track.at(i).box, engine.params.crop, (v.width, v.height), even=True) for i in range(n)]
    sizes = {(y2 - y1, x2 - x1) for x1, y1, x2, y2 in boxes}
    cached = blend_mask.cache_info()
    # One mask per crop size: computed at a size's first frame, then taken from the cache (each frame's
    # paste asks once, and the chroma mask of a new size once more).
    assert cached.misses == len(sizes) and cached.hits + cached.misses == n + len(sizes)
    w, h = v.width, v.height
    worst, changed = 0, 0
    for i, (a, b) in enumerate(zip(FrameReader(clip, frames=FrameRange(0, n), pix_fmt="yuv420p"),
                                   FrameReader(render.segment, pix_fmt="yuv420p"))):
        ya, yb = a[: w * h].reshape(h, w), b[: w * h].reshape(h, w)
        x1, y1, x2, y2 = boxes[i]
        mask = blend_mask(y2 - y1, x2 - x1, engine.params.blend)[:, :, 0]
        worst = max(worst, _border_step(ya, yb, boxes[i], mask))
        changed = max(changed, int(np.abs(yb.astype(int) - ya.astype(int)).max()))
    print(f"\nlargest step across the mask border: {worst} grey levels (largest change inside: {changed})")
    assert changed > 20  # the face really was re-drawn
    assert worst < 3
