"""Sample jobs for ``dub demo`` and the tests.

* :func:`make_demo_job` -- the demo: two real GRID speakers side by side taking turns
  (``asd-two-face-composite/grid_two_face_turns.mp4`` of ``../shared/data``, with its
  ground truth), dubbed in German: one character stem per face, each holding an excerpt
  of real German speech (``talking-heads/deyu.wav``) exactly where that face speaks in
  the original, plus a generated M&E.  Every stage has something to do: shots, faces,
  speakers (diarization, active speakers), casting, preview or lip-sync, QC.
* :func:`make_sample_job` -- a generated 3-shot film with a dubbed dialogue stem and an
  M&E stem (no faces, no speech): the fallback when ``../shared/data`` is absent.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from dubcore.manifest import CharacterStem, DubJob, DubTracks
from dubcore.timebase import samples_for_frames
from lipsync.media.synth import make_film, tone, write_tone

#: The two characters of the demo: which side of the picture they are, and which excerpt of deyu.wav they say
#: (seconds; the excerpt is cut to the length of that side's turn in the original).
DEMO_CHARACTERS = (("ALICE", "left", 1.30), ("BOB", "right", 4.00))
DEMO_FILM = ("asd-two-face-composite", "grid_two_face_turns.mp4")
DEMO_TRUTH = ("asd-two-face-composite", "grid_two_face_turns.json")
DEMO_SPEECH = ("talking-heads", "deyu.wav")


def shared_data() -> Path | None:
    """``$DUB_SHARED_DATA``, else ``../shared/data`` beside the checkout, when it holds the demo's sources."""
    root = Path(os.environ.get("DUB_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    needed = (DEMO_FILM, DEMO_TRUTH, DEMO_SPEECH)
    return root if all((root / a / b).is_file() for a, b in needed) else None


def make_demo_job(folder: Path, data: Path | None = None, rate: int = 48000) -> DubJob:
    """The two-speaker demo job in ``folder`` (film copied, stems and M&E written); see the module text.

    ``data``: the shared data folder (default :func:`shared_data`; FileNotFoundError when absent)."""
    import soundfile as sf

    from lipsync.media.audio import load_audio
    from lipsync.media.probe import probe

    data = data or shared_data()
    if data is None:
        raise FileNotFoundError("the demo's sources are missing: ../shared/data/asd-two-face-composite and talking-heads")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    film = folder / "film.mp4"
    shutil.copyfile(data.joinpath(*DEMO_FILM), film)
    truth = json.loads(data.joinpath(*DEMO_TRUTH).read_text(encoding="utf-8"))
    video = probe(film).require_video()
    n = samples_for_frames(video.frame_count, video.fps, rate)
    speech = load_audio(data.joinpath(*DEMO_SPEECH), rate)
    speech = speech * (0.5 / max(1e-6, float(np.abs(speech).max())))  # peaks at -6 dBFS: room for the M&E
    fade = int(0.02 * rate)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    characters = []
    for name, side, src in DEMO_CHARACTERS:
        stem = np.zeros(n, np.float32)
        for start, end in truth["speech"][side]:
            a, b = int(round(start * rate)), min(n, int(round(end * rate)))
            cut = speech[int(src * rate) : int(src * rate) + (b - a)].copy()
            cut[:fade] *= ramp[: len(cut[:fade])]
            cut[-fade:] *= ramp[::-1][-len(cut[-fade:]):]
            stem[a : a + len(cut)] = cut
        path = folder / f"{name.lower()}_de.wav"
        sf.write(str(path), stem, rate, subtype="PCM_24")
        characters.append(CharacterStem(name=name, path=str(path)))
    me = np.repeat((0.25 * tone(n, rate, freq=110.0, seed=8))[:, None], 2, axis=1)  # a quiet bed under the voices
    sf.write(str(folder / "me.wav"), me, rate, subtype="PCM_24")
    return DubJob(
        film=str(film),
        title="dub-film demo: two speakers taking turns (GRID), dubbed in German",
        dub=DubTracks(language="de", characters=tuple(characters), me=str(folder / "me.wav")),
        options={"speakers": "on", "qc": "on"},
    )


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
        film=str(film),
        title="dub-film sample",
        dub=DubTracks(language="es", dialogue=str(folder / "dialogue_es.wav"), me=str(folder / "me.wav")),
    )
