"""Assemble: join rendered segments and untouched shots into the delivered film with the dubbed mix."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.records import ShotList
from lipsync.media.assemble import AssemblyResult, assemble
from lipsync.media.frames import EncodeSettings
from lipsync.media.probe import MediaInfo

from .progress import reporter


@task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(
    film: Path,
    info: MediaInfo,
    shots: ShotList,
    segments: dict[str, Path],
    audio: Path,
    out: Path,
    settings: EncodeSettings,
    audio_codec: str | None,
) -> AssemblyResult:
    logger = get_run_logger()
    result = assemble(
        film, shots, out, audio=audio, segments=segments, settings=settings, audio_codec=audio_codec,
        info=info, progress=reporter("assemble", logger),
    )
    logger.info(
        "%s: %d frames; %d shot(s) from source, %d from segments",
        out.name, result.frame_count, len(result.shots_from_source), len(result.shots_from_segments),
    )
    return result
