"""Speakers: diarize the original and the dub, score every face with Light-ASD, cast; speakers.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import DubJob
from dubcore.records import FaceTrack, ShotList
from lipsync.job_report import speakers_summary  # noqa: F401  (re-exported: the report's view of the casting)
from lipsync.speakers import stage
from lipsync.speakers.plan import DubVoice, SpeakerPlan
from lipsync.speakers.rttm import write_rttm

from .retry import transient
from .faces import _device
from .progress import reporter
from .stages import cached_stage, job_options



def speakers_enabled(job: DubJob) -> bool:
    return job.options.runs_speakers


# --------------------------------------------------------------------------- stage cache (lipsync/stagecache.py)


def _diarize_key(params: dict, memo: Path) -> str:
    from lipsync.stagecache import content_digest, diarize_key

    return diarize_key(content_digest(params["audio"]), params["job"].options, params["uri"])


def _publish_rttm(result, params: dict, _call: dict) -> None:  # type: ignore[no-untyped-def]
    write_rttm(Path(params["root"]) / "original.rttm", result)


def _voices_key(params: dict, memo: Path) -> str:
    from lipsync.stagecache import film_digest, voices_key

    pre = params["pre"]
    return voices_key(film_digest(pre.film, memo), pre.stems, params["job"].options, memo)


def _voices_in_cache(params: dict, key: str, root: Path) -> tuple[dict, bool]:
    """The voices' WAVs (and dub.rttm) are written in the cache entry's folder: the records point at them, so
    they must outlive this run.  A folder not marked complete is made again."""
    import shutil

    from lipsync.stagecache import StageFiles

    folder = StageFiles(root, "dub-voices", key).dir
    fresh = not (folder / ".complete").exists()
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return {**params, "scratch": folder, "root": folder}, fresh


def _publish_voices(voices, params: dict, call: dict) -> None:  # type: ignore[no-untyped-def]
    import shutil

    src, dst = Path(call["root"]), Path(params["root"])
    if src != dst:
        if (src / "dub.rttm").exists():
            shutil.copyfile(src / "dub.rttm", dst / "dub.rttm")
        (src / ".complete").touch()


def _asd_key(params: dict, memo: Path) -> str:
    from lipsync.stagecache import asd_key, film_digest

    from lipsync.speakers.asd import AsdParams

    options = params["job"].options
    return asd_key(film_digest(params["film"], memo), params["tracks"], options, _device(options.lipsync_device), memo,
                   AsdParams())


def _publish_asd(result, params: dict, _call: dict) -> None:  # type: ignore[no-untyped-def]
    result.write(Path(params["root"]) / "asd.json")


def _cast_key(params: dict, memo: Path) -> str:
    from lipsync.stagecache import cast_key

    job = params["job"]
    return cast_key({k: v for k, v in params.items() if k not in ("job", "root")}, job.casting, job.options)


def _publish_plan(plan, params: dict, _call: dict) -> None:  # type: ignore[no-untyped-def]
    plan.write(Path(params["root"]) / "speakers.json")


# --------------------------------------------------------------------------- tasks


@task(name="original-audio-16k", cache_policy=NO_CACHE)
def original_audio_task(film: Path, scratch: Path) -> np.ndarray:
    """The film's soundtrack at 16 kHz mono, memory-mapped (never all in memory)."""
    return stage.original_audio(film, scratch)


@cached_stage(_diarize_key, job_options, publish=_publish_rttm)
@task(name="diarize-original", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def diarize_original_task(audio: np.ndarray, job: DubJob, uri: str, root: Path):  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    result = stage.diarize_original(audio, job, uri, progress=reporter("diarize original", logger))
    write_rttm(root / "original.rttm", result)
    for note in result.notes:
        logger.info(note)
    logger.info("original: %d turn(s), speakers %s (backend %s)", len(result.turns), list(result.speakers), result.backend)
    return result


@cached_stage(_voices_key, job_options, publish=_publish_voices, prepare=_voices_in_cache)
@task(name="dub-voices", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def dub_voices_task(job: DubJob, pre, scratch: Path, root: Path) -> tuple[DubVoice, ...]:  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    voices, diarization = stage.dub_voices(job, pre, scratch / "voices", progress=reporter("diarize dub", logger))
    if diarization is not None:
        write_rttm(root / "dub.rttm", diarization)
    for v in voices:
        logger.info("dub voice %s (%s): %.1f s of speech", v.name, v.source, sum(b - a for a, b in v.speech) / v.sample_rate)
    return voices


@cached_stage(_asd_key, job_options, publish=_publish_asd)
@task(name="active-speakers", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def asd_task(film: Path, info, tracks: Sequence[FaceTrack], audio: np.ndarray, job: DubJob, root: Path):  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    result = stage.score_faces(film, info, tracks, audio, job, device=_device(job.options.lipsync_device),
                               progress=reporter("active speakers", logger))
    result.write(root / "asd.json")
    for t in result.tracks:
        logger.info("%s: speaking in %d frame(s)", t.track_id, sum(r.duration for r in t.speaking))
    return result


@cached_stage(_cast_key, job_options, publish=_publish_plan)
@task(name="cast", cache_policy=NO_CACHE)
def cast_task(shots: ShotList, tracks: Sequence[FaceTrack], asd, diarization, voices: Sequence[DubVoice],  # type: ignore[no-untyped-def]
              job: DubJob, info, root: Path, quality: Mapping[str, Any] | None = None) -> SpeakerPlan:
    logger = get_run_logger()
    video = info.require_video()
    plan = stage.cast_film(shots, tracks, asd, diarization.turns, voices, job, video.fps, video.frame_count, quality)
    plan.write(root / "speakers.json")
    for d in plan.drives:
        logger.info("%s speaks as %s in %d frame(s)", d.track_id, d.voice, d.frames)
    for note in plan.to_dict()["notes"]:
        logger.info(note)
    return plan
