"""Speakers: diarize the original and the dub, score every face with Light-ASD, cast; speakers.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import DubJob
from dubcore.records import FaceTrack, ShotList
from lipsync.speakers import stage
from lipsync.speakers.plan import DubVoice, SpeakerPlan, plan_speakers
from lipsync.speakers.rttm import write_rttm

from .faces import _device
from .progress import reporter


def speakers_enabled(job: DubJob) -> bool:
    return job.options.runs_speakers


@task(name="original-audio-16k", cache_policy=NO_CACHE)
def original_audio_task(film: Path, scratch: Path) -> np.ndarray:
    """The film's soundtrack at 16 kHz mono, memory-mapped (never all in memory)."""
    return stage.original_audio(film, scratch)


@task(name="diarize-original", cache_policy=NO_CACHE, retries=1)
def diarize_original_task(audio: np.ndarray, job: DubJob, uri: str, root: Path):  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    result = stage.diarize_original(audio, job, uri, progress=reporter("diarize original", logger))
    write_rttm(root / "original.rttm", result)
    for note in result.notes:
        logger.info(note)
    logger.info("original: %d turn(s), speakers %s (backend %s)", len(result.turns), list(result.speakers), result.backend)
    return result


@task(name="dub-voices", cache_policy=NO_CACHE, retries=1)
def dub_voices_task(job: DubJob, pre, scratch: Path, root: Path) -> tuple[DubVoice, ...]:  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    voices, diarization = stage.dub_voices(job, pre, scratch / "voices", progress=reporter("diarize dub", logger))
    if diarization is not None:
        write_rttm(root / "dub.rttm", diarization)
    for v in voices:
        logger.info("dub voice %s (%s): %.1f s of speech", v.name, v.source, sum(b - a for a, b in v.speech) / v.sample_rate)
    return voices


@task(name="active-speakers", cache_policy=NO_CACHE, retries=1)
def asd_task(film: Path, info, tracks: Sequence[FaceTrack], audio: np.ndarray, job: DubJob, root: Path):  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    result = stage.score_faces(film, info, tracks, audio, job, device=_device(job.options.lipsync_device),
                               progress=reporter("active speakers", logger))
    result.write(root / "asd.json")
    for t in result.tracks:
        logger.info("%s: speaking in %d frame(s)", t.track_id, sum(r.duration for r in t.speaking))
    return result


@task(name="cast", cache_policy=NO_CACHE)
def cast_task(shots: ShotList, tracks: Sequence[FaceTrack], asd, diarization, voices: Sequence[DubVoice],  # type: ignore[no-untyped-def]
              job: DubJob, info, root: Path) -> SpeakerPlan:
    logger = get_run_logger()
    video = info.require_video()
    scores = {t.track_id: np.asarray(t.scores) for t in asd.tracks}
    plan = plan_speakers(list(shots), list(tracks), scores, diarization.turns, voices, video.fps, video.frame_count,
                         overrides=stage.overrides_of(job))
    plan.write(root / "speakers.json")
    for d in plan.drives:
        logger.info("%s speaks as %s in %d frame(s)", d.track_id, d.voice, d.frames)
    for note in plan.to_dict()["notes"]:
        logger.info(note)
    return plan


def speakers_summary(plan: SpeakerPlan) -> dict[str, Any]:
    """The report's view of the casting."""
    d = plan.to_dict()
    return {
        "characters": d["characters"],
        "off_screen": d["off_screen"],
        "voice_links": d["voice_links"],
        "notes": d["notes"],
    }
