"""The lip-sync engine with deterministic random Wav2Lip weights in the published checkpoint format."""

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import psnr, shared
from dub.cli import app
from dubcore.records import ShotList
from dubcore.timebase import FrameRange
from lipsync.faces.facesfile import read_faces
from lipsync.render.blend import crop_box
from lipsync.render.engine import LipSyncEngine
from lipsync.render.params import LipSyncParams, TrackDrive
from lipsync.media import FrameReader, probe
from lipsync.media.audio import load_audio
from lipsync.media.synth import make_moving_face
from lipsync.models.wav2lip import Wav2Lip, load_wav2lip

ASTRONAUT_FACE = (179.0, 55.0, 270.0, 178.0)


def _faces(video: Path, out: Path, store: Path) -> Path:
    result = CliRunner().invoke(app, ["faces", str(video), "--out", str(out), "--store", str(store)])
    assert result.exit_code == 0, result.output
    return out


def _outside_crops_psnr(src: Path, dst: Path, tracks, params: LipSyncParams) -> float:
    v = probe(src).require_video()
    worst = float("inf")
    for i, (a, b) in enumerate(zip(FrameReader(src), FrameReader(dst))):
        keep = np.ones(a.shape[:2], bool)
        for t in tracks:
            obs = t.at(i)
            if obs is not None:
                x1, y1, x2, y2 = crop_box(obs.box, params.crop, (v.width, v.height), even=True)
                keep[y1:y2, x1:x2] = False
        worst = min(worst, psnr(a[keep], b[keep]))
    return worst


def test_dub_lipsync_on_a_grid_clip(tmp_path, checkpoint, model_store):
    clip = shared("grid-talking-faces", "bbaf2n.mpg")
    speech = shared("grid-talking-faces", "lwbsza.mpg")  # another speaker's sentence drives the lips
    faces = _faces(clip, tmp_path / "faces.json", model_store)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["lipsync", str(clip), str(speech), "--out", str(out), "--checkpoint", str(checkpoint),
                                      "--faces", str(faces), "--device", "cpu", "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    src, dst = probe(clip).require_video(), probe(out).require_video()
    assert (dst.frame_count, dst.fps, dst.width, dst.height) == (src.frame_count, src.fps, src.width, src.height) == (75, Fraction(25), 360, 288)
    tracks = read_faces(faces).tracks
    assert _outside_crops_psnr(clip, out, tracks, LipSyncParams()) > 45
    # ... and the face itself was re-drawn: the mouth region differs from the source.
    (a, b) = next(zip(FrameReader(clip, frames=FrameRange(40, 41)), FrameReader(out, frames=FrameRange(40, 41))))
    x1, y1, x2, y2 = (int(v) for v in tracks[0].at(40).box)
    mouth = (slice((y1 + y2) // 2 + 10, y2 - 5), slice(x1 + 15, x2 - 15))
    assert psnr(a[mouth], b[mouth]) < 35
    assert probe(out).audio[0].sample_rate == 48000


def test_segment_is_bit_identical_outside_the_mask_and_windows_are_exact(tmp_path, checkpoint, face_detector):
    """A generated 23.976 fps shot: frame count and rate kept; frame i starts at sample round(i * 16000 / fps)."""
    fps = Fraction(24000, 1001)
    img = cv2.imread(str(shared("face-photos", "astronaut.png")))
    shot = make_moving_face(tmp_path / "shot.mp4", img, ASTRONAUT_FACE, frames=40, fps=fps)
    from lipsync.faces.pipeline import track_film_faces

    info = probe(shot.path)
    shots = ShotList.from_cuts(str(shot.path), fps, 40, [])
    (tracking,) = track_film_faces(shot.path, shots, face_detector, info=info)
    (track,) = tracking.tracks
    engine = LipSyncEngine(load_wav2lip(checkpoint), "cpu", LipSyncParams(batch_size=8))
    audio = load_audio(shared("grid-talking-faces", "lwbsza.mpg"), engine.contract.sample_rate)
    render = engine.render_shot(shot.path, FrameRange(0, 40), [TrackDrive(track, audio)], tmp_path / "seg.mkv", info=info)
    seg = probe(render.segment).require_video()
    assert (seg.frame_count, seg.fps, seg.pix_fmt) == (40, fps, "yuv420p")
    (tr,) = render.tracks
    assert tr.synthesized == 40 and tr.untouched == {}
    assert list(tr.window_sample_starts) == [(2 * i * 16000 * 1001 + 24000) // (2 * 24000) for i in range(40)]
    # Outside the face crops the lossless segment is the source, byte for byte (in the source's own planes).
    w, h = seg.width, seg.height
    for i, (a, b) in enumerate(zip(FrameReader(shot.path, pix_fmt="yuv420p"), FrameReader(render.segment, pix_fmt="yuv420p"))):
        x1, y1, x2, y2 = crop_box(track.at(i).box, engine.params.crop, (w, h), even=True)
        ya, yb = a[: w * h].reshape(h, w).copy(), b[: w * h].reshape(h, w).copy()
        ya[y1:y2, x1:x2] = yb[y1:y2, x1:x2] = 0
        assert np.array_equal(ya, yb), i


def test_silent_ranges_keep_the_original_frames(tmp_path, checkpoint, face_detector):
    clip = shared("grid-talking-faces", "sbia1a.mpg")
    info = probe(clip)
    from lipsync.faces.pipeline import track_film_faces

    (tracking,) = track_film_faces(clip, ShotList.from_cuts(str(clip), Fraction(25), 75, []), face_detector, info=info)
    (track,) = tracking.tracks
    engine = LipSyncEngine(load_wav2lip(checkpoint), "cpu", LipSyncParams(batch_size=16))
    audio = load_audio(clip, 16000)
    speaking = (FrameRange(20, 50),)
    render = engine.render_shot(clip, FrameRange(0, 75), [TrackDrive(track, audio, speaking)], tmp_path / "seg.mkv", info=info)
    (tr,) = render.tracks
    assert tr.synthesized == 30 and tr.untouched == {"silent": 45}
    for i, (a, b) in enumerate(zip(FrameReader(clip, pix_fmt="yuv420p"), FrameReader(render.segment, pix_fmt="yuv420p"))):
        if i not in speaking[0]:
            assert np.array_equal(a, b), i


def test_dub_lipsync_on_a_generated_23_976_fps_shot(tmp_path, checkpoint, model_store):
    fps = Fraction(24000, 1001)
    img = cv2.imread(str(shared("face-photos", "astronaut.png")))
    shot = make_moving_face(tmp_path / "shot.mp4", img, ASTRONAUT_FACE, frames=36, fps=fps)
    out = tmp_path / "out.mov"
    result = CliRunner().invoke(app, ["lipsync", str(shot.path), str(shared("grid-talking-faces", "lwbsza.mpg")),
                                      "--out", str(out), "--checkpoint", str(checkpoint), "--store", str(model_store),
                                      "--device", "cpu", "--batch-size", "12"])
    assert result.exit_code == 0, result.output
    assert "1 shot(s) lip-synced, 1 face track(s)" in result.stdout
    dst = probe(out).require_video()
    assert (dst.frame_count, dst.fps) == (36, fps)


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(24000, 1001)])
def test_block_wise_mel_windows_equal_the_whole_shot_computation(fps):
    from lipsync.audio.mel import mel_windows, melspectrogram
    from lipsync.render.audio import _Windows

    contract = Wav2Lip.contract
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(16000 * 70 + 123)).astype(np.float32)  # 70 s: three blocks
    frames = int(70 * fps) + 5  # a few frames past the end of the audio
    whole = mel_windows(melspectrogram(audio, contract), frames, fps, contract)
    blocks = _Windows(audio, fps, contract)
    for i in list(range(0, 40)) + list(range(700, 780)) + list(range(frames - 60, frames)):
        assert np.allclose(blocks[i], whole[i], atol=1e-5), i
