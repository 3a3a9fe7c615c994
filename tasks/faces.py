"""Faces, per shot: the job's face detector (options.face_weights) in batches, tracking and smoothing; faces.json for the film."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import Shot, ShotList
from lipsync.device import resolve_device
from lipsync.faces.detect import FaceDetector, build_detector
from lipsync.faces.facesfile import write_faces
from lipsync.faces.pipeline import FaceTrackingParams, track_shot_faces
from lipsync.faces.track import TrackerParams, TrackingResult
from lipsync.media.probe import MediaInfo
from lipsync.stagecache import faces_key, film_digest

from .retry import transient
from .progress import reporter
from .stages import cached_stage, options_param


def _device(name: str) -> str:
    """The device of a ``*_device`` option (:func:`lipsync.device.resolve_device`; kept for this name's importers)."""
    return resolve_device(name)


@lru_cache(maxsize=2)
def _detector(weights: str, device: str, batch_size: int, max_size: int) -> FaceDetector:
    """One detector per process and settings: the model is loaded once, not per shot."""
    return build_detector(weights, device=device, batch_size=batch_size, max_size=max_size)  # the entry's family picks it


def tracking_params(options: JobOptions) -> FaceTrackingParams:
    return FaceTrackingParams(
        tracker=TrackerParams(min_face_size=options.face_min_size, min_track_frames=options.face_min_track_frames)
    )


def _faces_key(params: dict, memo: Path) -> str:
    options = params["options"]
    return faces_key(film_digest(params["film"], memo), params["shot"], options, _device(options.face_device), memo,
                     tracking_params(options).to_dict())


@cached_stage(_faces_key, options_param)
@task(name="faces-shot", task_run_name="faces {shot.id} @ {shot.start_timecode}", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def faces_shot_task(shot: Shot, film: Path, info: MediaInfo, options: JobOptions) -> TrackingResult:
    """One shot's face tracks (cached on the film's bytes, the shot and the face options: :mod:`lipsync.stagecache`);
    faces.json is written from them by :func:`write_faces_task`."""
    logger = get_run_logger()
    detector = _detector(options.face_weights, _device(options.face_device), options.face_batch_size, options.face_max_size)
    result = track_shot_faces(
        film, shot, detector, tracking_params(options), batch_size=options.face_batch_size, info=info,
        progress=reporter(f"faces {shot.id}", logger),
    )
    logger.info("%s: %d track(s), %d dropped", shot.id, len(result.tracks), len(result.dropped))
    for d in result.dropped:
        logger.info("dropped %s: %s", d.track.id, d.reason)
    return result


@task(name="write-faces", cache_policy=NO_CACHE)
def write_faces_task(
    film: Path, shots: ShotList, results: list[TrackingResult], options: JobOptions, out_dir: Path
) -> Path:
    detector = _detector(options.face_weights, _device(options.face_device), options.face_batch_size, options.face_max_size)
    return write_faces(
        out_dir / "faces.json",
        source=str(film),
        fps=shots.fps,
        frame_count=shots.frame_count,
        shots=list(shots),
        tracks=[t for r in results for t in r.tracks],
        dropped=[d for r in results for d in r.dropped_dicts()],
        params={"detector": detector.describe(), **tracking_params(options).to_dict()},
        quality={tid: q for r in results for tid, q in r.quality.items()},
    )
