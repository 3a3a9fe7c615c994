"""One decode, one encode: a 3-shot film with its middle shot lip-synced.

The lip-synced shot is rendered straight into the delivery codec and copied into the
film; each untouched shot is decoded once and encoded once; nothing is decoded a
second time (no process reads the segment; the final mux copies the picture).  The
generator is a small test generator plugged into the engine through the generator
seam (no torch), so the test is about the media path.
"""

import json
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from conftest import psnr
from dubcore.records import FaceObservation, FaceTrack, ShotList
from dubcore.timebase import samples_for_frames
from lipsync.media import FrameReader, probe
from lipsync.media.assemble import assemble, resolve_settings
from lipsync.media.launches import record_launches
from lipsync.media.synth import make_film, write_tone
from lipsync.models.wav2lip import Wav2Lip
from lipsync.render.engine import LipSyncEngine
from lipsync.render.params import LipSyncParams, TrackDrive

LENGTHS = [20, 26, 22]
BOX = (120.0, 70.0, 200.0, 170.0)


class TintGenerator:
    """A generator with Wav2Lip's contract that paints the lower half of every face a flat colour."""

    contract = Wav2Lip.contract

    def __init__(self) -> None:
        self.batches = 0

    def preprocess(self, faces, mels):
        return faces.astype(np.float32) / 255.0, mels.astype(np.float32)

    def forward(self, face_input, mel):
        self.batches += 1
        out = face_input.copy()
        half = out.shape[1] // 2
        out[:, half:] = (0.2, 0.3, 0.9)  # BGR, 0..1
        return out.transpose(0, 3, 1, 2)

    def postprocess(self, raw):
        return (raw.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def _packets(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,duration",
                          "-show_entries", "stream=time_base", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_untouched_shots_are_decoded_and_encoded_once(tmp_path):
    fps = Fraction(24000, 1001)
    film = make_film(tmp_path / "film.mp4", LENGTHS, fps=fps, audio=False).path
    info = probe(film)
    v = info.require_video()
    total = sum(LENGTHS)
    shots = ShotList.from_cuts(str(film), fps, total, [LENGTHS[0], LENGTHS[0] + LENGTHS[1]])
    mid = shots.shots[1]
    track = FaceTrack("shot-0002/face-01", mid.id, mid.frames,
                      tuple(FaceObservation(i, BOX, None, 1.0) for i in range(mid.frames.start, mid.frames.end)))
    audio = np.zeros(samples_for_frames(mid.frames.duration + 4, fps, 16000), np.float32)
    write_tone(tmp_path / "mix.wav", samples_for_frames(total, fps, 48000), 48000)
    out = tmp_path / "film.dubbed.mp4"
    settings = resolve_settings(None, v, out.suffix)
    assert settings.codec == "libx264"

    generator = TintGenerator()
    engine = LipSyncEngine(generator, "cpu", LipSyncParams(batch_size=8))  # plugged in: the engine is not edited
    with record_launches() as launched:
        render = engine.render_shot(film, mid.frames, [TrackDrive(track, audio)], tmp_path / "seg.mkv",
                                    info=info, settings=settings)
        result = assemble(film, shots, out, audio=tmp_path / "mix.wav", segments={mid.id: render.segment},
                          settings=settings, info=info)
    assert generator.batches == 4 and render.tracks[0].synthesized == mid.frames.duration

    # Each part of the picture decoded once and encoded once: 3 decodes of the film, one per part,
    # covering every frame exactly once; the segment is never decoded; the final mux copies the picture.
    decodes = launched.decoding(film)
    assert sorted(int(c[c.index("-frames:v") + 1]) for c in decodes) == sorted(LENGTHS)
    assert launched.decoding(render.segment) == [] and launched.reading(render.segment) == []
    encoders = [c for c in launched.commands if "rawvideo" in c and "pipe:0" in c]
    assert len(encoders) == 3
    muxes = [c for c in launched.commands if "-c:v" in c and c[c.index("-c:v") + 1] == "copy"]
    assert len(muxes) == 1
    assert launched.count("ffprobe") == 0  # the source's probe travelled with the shot; the film is checked in-process
    assert launched.count() == 3 + 3 + 1
    assert [p["how"] for p in result.parts] == ["encoded from source", "copied", "encoded from source"]

    # Timestamps exact on the frame grid of 24000/1001.
    packets = _packets(out)
    tb = Fraction(packets["streams"][0]["time_base"])
    pts = sorted(int(p["pts"]) for p in packets["packets"])
    step = Fraction(1001, 24000) / tb
    assert step.denominator == 1 and len(pts) == total
    assert [p - pts[0] for p in pts] == [int(step) * i for i in range(total)]

    # Unchanged shots within 45 dB of the source; the lip-synced shot differs only inside the mask.
    o = probe(out).require_video()
    assert (o.frame_count, o.fps, o.width, o.height, o.pix_fmt) == (total, fps, v.width, v.height, v.pix_fmt)
    changed = 0
    for i, (a, b) in enumerate(zip(FrameReader(film, info=info), FrameReader(out))):
        if i in mid.frames:
            x1, y1, x2, y2 = (int(c) for c in BOX)
            outside = np.ones(a.shape[:2], bool)
            outside[max(0, y1 - 20):y2 + 20, max(0, x1 - 20):x2 + 20] = False
            assert psnr(a[outside], b[outside]) > 45, i
            changed += int(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean() > 5)
        else:
            assert psnr(a, b) > 45, i
    assert changed == mid.frames.duration


def test_a_segment_from_elsewhere_is_encoded_again_and_said(tmp_path):
    """A lossless FFV1 segment (an older run, another tool) still joins: encoded once more, and the result says so."""
    from lipsync.media.assemble import write_segment

    fps = Fraction(25)
    film = make_film(tmp_path / "film.mp4", [10, 12], fps=fps, audio=False).path
    info = probe(film)
    v = info.require_video()
    shots = ShotList.from_cuts(str(film), fps, 22, [10])
    second = shots.shots[1]
    frames = [255 - f for f in FrameReader(film, frames=second.frames, pix_fmt=v.pix_fmt, info=info)]
    seg = write_segment(tmp_path / "seg.mkv", iter(frames), like=v, count=second.frames.duration)
    result = assemble(film, shots, tmp_path / "out.mp4", audio=None, segments={second.id: seg}, info=info)
    assert [p["how"] for p in result.parts] == ["encoded from source", "encoded again"]
    assert any("encoded again" in n and "ffv1" in n for n in result.notes)
    for i, (a, b) in enumerate(zip(FrameReader(film, info=info, pix_fmt=v.pix_fmt), FrameReader(tmp_path / "out.mp4", pix_fmt=v.pix_fmt))):
        ref = frames[i - 10] if i >= 10 else a
        assert psnr(ref, b) > 45, i


@pytest.mark.parametrize("rate", [Fraction(25), Fraction(30000, 1001)])
def test_parts_of_other_lengths_join_frame_exact(tmp_path, rate):
    """Many short parts (1 to 7 frames) at 25 and 29.97 fps: frame count and every timestamp exact."""
    lengths = [1, 7, 2, 5, 3, 1, 6]
    film = make_film(tmp_path / "film.mp4", lengths, fps=rate, audio=False).path
    info = probe(film)
    total = sum(lengths)
    cuts = list(np.cumsum(lengths)[:-1])
    shots = ShotList.from_cuts(str(film), rate, total, [int(c) for c in cuts])
    # Every other shot from a separately encoded segment (the film's own frames, encoded as delivered).
    from lipsync.media.assemble import write_segment

    v = info.require_video()
    settings = resolve_settings(None, v, ".mp4")
    segments = {}
    for shot in shots.shots[::2]:
        frames = list(FrameReader(film, frames=shot.frames, pix_fmt=v.pix_fmt, info=info))
        segments[shot.id] = write_segment(tmp_path / f"{shot.id}.mkv", iter(frames), like=v, count=len(frames), settings=settings)
    result = assemble(film, shots, tmp_path / "out.mp4", audio=None, segments=segments, settings=settings, info=info)
    assert [p["how"] for p in result.parts].count("copied") == len(segments)
    packets = _packets(tmp_path / "out.mp4")
    tb = Fraction(packets["streams"][0]["time_base"])
    step = Fraction(rate.denominator, rate.numerator) / tb
    pts = sorted(int(p["pts"]) for p in packets["packets"])
    assert step.denominator == 1 and [p - pts[0] for p in pts] == [int(step) * i for i in range(total)]
    for i, (a, b) in enumerate(zip(FrameReader(film, info=info), FrameReader(tmp_path / "out.mp4"))):
        assert psnr(a, b) > 45, i
