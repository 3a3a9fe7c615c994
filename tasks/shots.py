"""Shots: split the film with PySceneDetect detectors; write shots.json, an EDL and an OTIO timeline."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import ShotList
from lipsync.media.probe import MediaInfo
from lipsync.shots import detect_shots, write_shot_files
from lipsync.stagecache import film_digest, shots_key

from .progress import reporter
from .stages import cached_stage, options_param


def _key(params: dict, memo: Path) -> str:
    return shots_key(film_digest(params["film"], memo), params["options"])


def _publish(shots: ShotList, params: dict, _call: dict) -> None:
    """shots.json, the EDL and the OTIO timeline in this run's folder (from the records: cached or not)."""
    out_dir = Path(params["out_dir"])
    write_shot_files(shots, out_dir / "shots.json", out_dir / "shots.edl", out_dir / "shots.otio")


@cached_stage(_key, options_param, publish=_publish)
@task(name="detect-shots", cache_policy=NO_CACHE)
def detect_shots_task(film: Path, info: MediaInfo, options: JobOptions, out_dir: Path) -> ShotList:
    """The shot list (cached on the film's bytes and the shot options: :mod:`lipsync.stagecache`)."""
    logger = get_run_logger()
    shots = detect_shots(
        film,
        detectors=options.shot_detectors,
        min_shot_frames=options.min_shot_frames,
        detector_options={"content": {"threshold": options.content_threshold}},
        info=info,
        progress=reporter("shots", logger),
    )
    logger.info("%d shots; cuts at frames %s", len(shots), shots.cuts)
    return shots
