"""Shots: split the film with PySceneDetect detectors; write shots.json, an EDL and an OTIO timeline."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import ShotList
from lipsync.media.probe import MediaInfo
from lipsync.shots import detect_shots, write_edl, write_otio, write_shots

from .progress import reporter


@task(name="detect-shots", cache_policy=NO_CACHE)
def detect_shots_task(film: Path, info: MediaInfo, options: JobOptions, out_dir: Path) -> ShotList:
    logger = get_run_logger()
    shots = detect_shots(
        film,
        detectors=options.shot_detectors,
        min_shot_frames=options.min_shot_frames,
        detector_options={"content": {"threshold": options.content_threshold}},
        info=info,
        progress=reporter("shots", logger),
    )
    write_shots(out_dir / "shots.json", shots)
    write_edl(out_dir / "shots.edl", shots)
    write_otio(out_dir / "shots.otio", shots)
    logger.info("%d shots; cuts at frames %s", len(shots), shots.cuts)
    return shots
