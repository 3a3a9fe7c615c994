"""The casting preview (lipsync/preview.py, `dub preview`): frame count, low resolution, audio, and the
tint exactly on the frames a driven face will be re-voiced (pixel colours read back from the MP4)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from typer.testing import CliRunner

from dub.cli import app
from dubcore.records import FaceObservation, FaceTrack
from dubcore.schema import write_json
from dubcore.timebase import FrameRange
from lipsync.faces.facesfile import write_faces
from lipsync.media.frames import FrameReader
from lipsync.media.probe import probe
from lipsync.media.synth import make_film
from lipsync.preview import TINT_ALPHA, CastingView, preview_size, render_preview, voice_colour
from dubcore.records import ShotList

FPS = Fraction(25)
SHOTS = [20, 20]
BOX_A = (120.0, 120.0, 360.0, 360.0)  # in the 720x480 source
BOX_B = (420.0, 90.0, 660.0, 330.0)
DRIVEN = [(4, 9), (13, 17)]  # face A re-voiced on these frames of shot 1


def _track(tid: str, shot: str, frames: FrameRange, box) -> FaceTrack:  # type: ignore[no-untyped-def]
    return FaceTrack(tid, shot, frames, tuple(FaceObservation(f, box, None, 0.99) for f in frames))


def _plan() -> dict:
    """A speakers.json body: A driven by ALICE as SPK00 (newer fields: confidence, reason), B linked to nobody."""
    return {
        "voices": [{"name": "ALICE", "audio": "alice.wav", "sample_rate": 16000, "source": "stem", "speech": []}],
        "voice_links": [{"role": "ALICE", "speaker": "SPK00", "overlap": 0.9, "source": "overlap"}],
        "track_links": [{"track": "shot-0001/face-01", "shot": "shot-0001", "speaker": "SPK00", "affinity": 0.4,
                         "confidence": 0.81, "reason": "lips move with SPK00's lines", "speaking": [list(r) for r in DRIVEN]}],
        "drives": [{"track": "shot-0001/face-01", "shot": "shot-0001", "voice": "ALICE", "audio": "alice.wav",
                    "speaking": [list(r) for r in DRIVEN], "frames": sum(b - a for a, b in DRIVEN)}],
        "off_screen": [], "notes": [],
    }


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preview")
    film = make_film(folder / "film.mp4", SHOTS, fps=FPS, size=(720, 480))
    tracks = [_track("shot-0001/face-01", "shot-0001", FrameRange(0, 20), BOX_A),
              _track("shot-0002/face-01", "shot-0002", FrameRange(20, 40), BOX_B)]
    return folder, film, tracks


def _inner(box, scale: float, inset: int = 6):  # type: ignore[no-untyped-def]
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    return slice(y1 + inset, y2 - inset), slice(x1 + inset, x2 - inset)


def test_casting_view_reads_old_and_new_plans():
    new = CastingView.from_plan_dict(_plan(), ["shot-0002/face-01"])
    a, b = new.tracks["shot-0001/face-01"], new.tracks["shot-0002/face-01"]
    assert a.driven and a.voice == "ALICE" and a.character == "SPK00" and a.confidence == 0.81
    assert a.reason == "lips move with SPK00's lines" and a.label == "SPK00 <- ALICE 0.81"
    assert not b.driven and "never seen speaking" in b.reason
    old = _plan()
    for link in old["track_links"]:  # a plan written before confidence / reason existed
        del link["confidence"], link["reason"]
    a_old = CastingView.from_plan_dict(old).tracks["shot-0001/face-01"]
    assert a_old.confidence == 0.4 and a_old.driven
    with_decisions = {**_plan(), "decisions": [{"track": "shot-0001/face-01", "character": "SPK00", "voice": "ALICE",
                                                 "confidence": 0.3, "reason": "two faces plausible", "review": True}]}
    d = CastingView.from_plan_dict(with_decisions).tracks["shot-0001/face-01"]
    assert d.confidence == 0.3 and d.review and d.reason == "two faces plausible"


def test_preview_size_is_low_even_and_never_upscaled():
    assert preview_size(1920, 1080) == (640, 360)
    assert preview_size(720, 480) == (540, 360)
    assert preview_size(720, 288) == (720, 288)
    assert preview_size(1998, 1080, 360) == (666, 360)
    assert all(v % 2 == 0 for v in preview_size(1001, 777, 301))


def test_preview_boxes_and_tints_only_the_driven_frames(scene, tmp_path):
    folder, film, tracks = scene
    view = CastingView.from_plan_dict(_plan(), [t.id for t in tracks])
    out = tmp_path / "preview.mp4"
    result = render_preview(film.path, tracks, view, out)
    assert (result.frames, result.width, result.height) == (40, 540, 360)
    info = probe(out)
    v = info.require_video()
    assert (v.frame_count, v.width, v.height, v.fps, v.codec) == (40, 540, 360, FPS, "h264")
    assert info.audio, "the film's audio is muxed in"
    assert set(result.thumbnails) == {t.id for t in tracks}
    assert all(j[:2] == b"\xff\xd8" for j in result.thumbnails.values())  # JPEG

    scale = 360 / 480
    colour = np.array(voice_colour(0), np.float64)  # ALICE is the first voice
    driven = np.zeros(40, bool)
    for a, b in DRIVEN:
        driven[a:b] = True
    ya, xa = _inner(BOX_A, scale)
    yb, xb = _inner(BOX_B, scale)
    with FrameReader(film.path, size=(540, 360)) as src, FrameReader(out) as prev:
        for i, (s, p) in enumerate(zip(src, prev)):
            s, p = s.astype(np.float64), p.astype(np.float64)
            if i < 20:
                region_s, region_p = s[ya, xa].mean(axis=(0, 1)), p[ya, xa].mean(axis=(0, 1))
                if driven[i]:  # tinted towards ALICE's colour by TINT_ALPHA
                    expected = region_s * (1 - TINT_ALPHA) + colour * TINT_ALPHA
                    assert np.abs(region_p - expected).max() < 12, (i, region_p, expected)
                    assert np.abs(region_p - region_s).max() > 30, i
                else:  # boxed, not tinted
                    assert np.abs(p[ya, xa] - s[ya, xa]).mean() < 6, i
                # The box outline, in the voice's colour, on every frame of the track.
                x1, y1 = int(round(BOX_A[0] * scale)), int(round(BOX_A[1] * scale))
                edge = p[y1 + 10 : y1 + 40, x1 - 1 : x1 + 2].mean(axis=(0, 1))
                assert np.abs(edge - colour).max() < 60, (i, edge)
            else:  # face B is not driven: never tinted
                assert np.abs(p[yb, xb] - s[yb, xb]).mean() < 6, i
            # Away from every face the picture is the film's, downscaled.
            assert np.abs(p[300:350, 10:100] - s[300:350, 10:100]).mean() < 6, i


def test_dub_preview_from_a_speakers_json(scene, tmp_path):
    folder, film, tracks = scene
    shots = ShotList.from_cuts(str(film.path), FPS, 40, [20])
    write_faces(tmp_path / "faces.json", source=str(film.path), fps=FPS, frame_count=40, shots=list(shots), tracks=tracks)
    write_json(tmp_path / "speakers.json", "speakers", {"fps": "25", "frame_count": 40, **_plan()})
    (tmp_path / "dub.wav").write_bytes(b"")  # the manifest must name a dub; `preview` with --speakers never reads it
    manifest = tmp_path / "job.json"
    manifest.write_text(json.dumps({"schema": "dub-film/manifest@1", "film": str(film.path), "dub": {"dialogue": "dub.wav"}}))
    out = tmp_path / "out" / "preview.mp4"
    res = CliRunner().invoke(app, ["preview", str(manifest), "--out", str(out), "--speakers", str(tmp_path / "speakers.json"),
                                   "--faces", str(tmp_path / "faces.json"), "--max-height", "240"])
    assert res.exit_code == 0, res.output
    assert "shot-0001/face-01: SPK00 <- ALICE 0.81" in res.output and "1 of 2 face(s) driven" in res.output
    v = probe(out).require_video()
    assert (v.frame_count, v.height, v.width) == (40, 240, 360)
    res = CliRunner().invoke(app, ["preview", str(manifest), "--out", str(out), "--speakers", str(tmp_path / "speakers.json")])
    assert res.exit_code == 2 and "--faces" in res.output
