"""The embedded sample job: a generated 3-shot film, a dubbed dialogue stem and an M&E stem."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from dubcore.manifest import DubJob, DubTracks
from dubcore.timebase import samples_for_frames
from lipsync.media.synth import make_film, write_tone


def make_sample_job(folder: Path, seconds: int = 12, fps: Fraction = Fraction(24000, 1001)) -> DubJob:
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    total = int(seconds * fps)
    lengths = [total // 3, total // 3, total - 2 * (total // 3)]
    film = make_film(folder / "film.mp4", lengths, fps=fps, size=(640, 360))
    n = samples_for_frames(total, fps, 48000)
    write_tone(folder / "dialogue_es.wav", n, 48000, freq=330.0, seed=7)
    write_tone(folder / "me.wav", n, 48000, freq=110.0, seed=8, channels=2)
    return DubJob(
        film=str(film.path),
        title="dub-film sample",
        dub=DubTracks(language="es", dialogue=str(folder / "dialogue_es.wav"), me=str(folder / "me.wav")),
    )
