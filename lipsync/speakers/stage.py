"""The speaker stage of a dubbing job, as plain functions (the Prefect tasks and ``dub match`` call these).

1. :func:`original_audio` -- the film's own soundtrack at 16 kHz mono, memory-mapped.
2. :func:`diarize_original` -- who speaks when in the original (RTTM).
3. :func:`dub_voices` -- the dubbed voices: one per character stem (voice activity
   from the stem), or one per diarized speaker of a mixed dialogue stem.
4. :func:`score_faces` -- Light-ASD scores of every face track against the original audio.
5. :func:`plan_speakers` (:mod:`.plan`) -- the casting and the per-track drives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import soundfile as sf

from dubcore.manifest import DubJob
from dubcore.records import FaceTrack

from .plan import DubVoice, Overrides

Progress = Callable[[int, int], Any]

#: All speaker analysis runs at this rate (the ASD's MFCCs, the diarization models, Wav2Lip's mels).
SAMPLE_RATE = 16000


def original_audio(film: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> np.ndarray:
    """The film's first audio stream, 16 kHz mono float32, memory-mapped from ``workdir``."""
    from .asd import audio_16k_memmap

    return audio_16k_memmap(film, Path(workdir) / "original_16k.f32")


def diarize_original(audio: np.ndarray, job: DubJob, uri: str, progress: Progress | None = None):  # type: ignore[no-untyped-def]
    from .diarize import diarize

    o = job.options
    return diarize(np.asarray(audio), SAMPLE_RATE, backend=o.diarization_backend, num_speakers=o.num_speakers,
                   pyannote_pipeline=o.diarization_pipeline, progress=progress, uri=uri)


def dub_voices(job: DubJob, pre, workdir: str | os.PathLike[str], progress: Progress | None = None):  # type: ignore[no-untyped-def]
    """``(voices, diarization of the dub or None)``.  Every voice's audio is a 16 kHz mono WAV as
    long as the picture (sample 0 = frame 0), written under ``workdir``."""
    from lipsync.media.audio import mix_stems

    from .activity import speech_spans
    from .diarize import diarize

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    video = pre.info.require_video()
    characters = [s for s in pre.stems if s.role.startswith("character:")]
    common = dict(frame_count=video.frame_count, fps=video.fps, sample_rate=SAMPLE_RATE,
                  length_policy=job.options.audio_length_policy, workdir=workdir)
    if characters:
        voices = []
        for k, stem in enumerate(characters):
            name = stem.role.split(":", 1)[1]
            wav = mix_stems([stem], workdir / f"voice-{k:02d}.wav", **common)
            data, _ = sf.read(str(wav.path), dtype="float32", always_2d=True)
            spans = speech_spans(data.mean(axis=1), SAMPLE_RATE)
            voices.append(DubVoice(name, str(wav.path), SAMPLE_RATE, tuple(spans), "stem"))
        return tuple(voices), None
    stems = [s for s in pre.stems if s.role != "me"]
    kind = stems[0].role if len(stems) == 1 else "dialogue"
    wav = mix_stems(stems, workdir / "dub-dialogue.wav", **common)
    data, _ = sf.read(str(wav.path), dtype="float32", always_2d=True)
    o = job.options
    result = diarize(data.mean(axis=1), SAMPLE_RATE, backend=o.diarization_backend, num_speakers=o.dub_num_speakers,
                     pyannote_pipeline=o.diarization_pipeline, progress=progress, uri="dub")
    voices = tuple(
        DubVoice(f"{kind}:{spk}", str(wav.path), SAMPLE_RATE,
                 tuple((t.start_sample, t.end_sample) for t in result.turns if t.speaker == spk), "diarized")
        for spk in result.speakers
    )
    return voices, result


def score_faces(film, info, tracks: Sequence[FaceTrack], audio: np.ndarray, job: DubJob,  # type: ignore[no-untyped-def]
                store: str | None = None, device: str = "cpu", progress: Progress | None = None):
    """Light-ASD over every track; an :class:`~lipsync.speakers.asd.AsdResult`."""
    from lipsync import store as model_store
    from lipsync.models.light_asd import load_light_asd

    from .asd import AsdParams, AsdResult, score_tracks

    video = info.require_video()
    weights = job.options.asd_weights
    model = load_light_asd(model_store.resolve(weights, store), device)
    params = AsdParams()
    scores = score_tracks(film, tracks, audio, 0, model, fps=video.fps, info=info, params=params, progress=progress)
    return AsdResult.from_scores(str(film), video.fps, video.frame_count, list(tracks), scores, params,
                                 model={"weights": weights})


def overrides_of(job: DubJob) -> Overrides:
    return Overrides(voices=dict(job.casting.voices), tracks=dict(job.casting.tracks))


def cast_film(shots, tracks: Sequence[FaceTrack], asd, turns, voices: Sequence[DubVoice], job: DubJob,  # type: ignore[no-untyped-def]
              fps, frame_count: int, quality: Mapping[str, Any] | None = None):
    """The casting of a job (:func:`~lipsync.speakers.plan.plan_speakers`), as ``dub run`` and ``dub match`` both do it.

    ``asd`` is the :class:`~lipsync.speakers.asd.AsdResult` of ``tracks``; ``quality``
    maps track ids to their face quality (:class:`lipsync.faces.quality.TrackQuality`:
    ``castable`` and ``reason``); a track without one is castable."""
    from .asd import AsdParams
    from .match import CastingParams
    from .plan import plan_speakers

    scores = {t.track_id: np.asarray(t.scores) for t in asd.tracks}
    quality = dict(quality or {})
    castable = {tid: bool(getattr(q, "castable", True)) for tid, q in quality.items()}
    reasons = {tid: str(getattr(q, "reason", "")) for tid, q in quality.items()}
    decision = {k: float(v) for k, v in (asd.params or {}).items() if k in ("threshold", "median_seconds", "min_speech_seconds")}
    params = CastingParams(asd=AsdParams(**decision))  # the speaking rule the ASD stage used
    return plan_speakers(list(shots), list(tracks), scores, list(turns), voices, fps, frame_count,
                         overrides=overrides_of(job), castable=castable, weak_reasons=reasons, params=params)
