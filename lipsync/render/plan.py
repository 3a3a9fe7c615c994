"""Which shots are lip-synced, with which faces and voices: the render jobs of a film.

:func:`plan_renders` turns the casting (a :class:`~lipsync.speakers.plan.SpeakerPlan`)
or, without one, the whole dub dialogue, into :class:`~lipsync.render.job.ShotJob`\\ s,
one per shot with a face to re-voice, and the reason each other shot is left as it
is.  :func:`second_takes` and :func:`keep_take` are the QC retry: which shots get a
second take, with which parameters, and which take is kept.  No Prefect, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..media.frames import EncodeSettings
from ..media.probe import MediaInfo
from .job import ShotJob
from .params import LipSyncParams


@dataclass(frozen=True)
class RenderPlan:
    """The shots to render (``jobs``, in film order) and why every other shot is left unchanged."""

    jobs: tuple[ShotJob, ...]
    unchanged: Mapping[str, str]

    def job_of(self, shot_id: str) -> ShotJob | None:
        return next((j for j in self.jobs if j.shot_id == shot_id), None)


NO_WEIGHTS = "lip-sync not requested (options.lipsync_checkpoint is unset)"


def plan_renders(
    shots: Sequence[Any],
    faces: Sequence[Any],
    film: str | Path,
    info: MediaInfo,
    work: str | Path,
    *,
    plan: Any = None,
    dialogue: str | Path | None = None,
    settings: EncodeSettings | None = None,
    sample_rate: int | None = None,
) -> RenderPlan:
    """The render jobs of a film: with a speaker ``plan``, each face driven by its dubbed voice where it
    speaks (faces that do not speak are left alone); without one, every face track of a shot driven by
    the whole ``dialogue``.  Segments are written under ``work/shots/<shot id>/segment.mkv``, encoded
    with ``settings`` (the film's resolved delivery encode) so assembly copies them."""
    video = info.require_video()
    work = Path(work)
    jobs: list[ShotJob] = []
    unchanged: dict[str, str] = {}
    if plan is None and dialogue is None:
        raise ValueError("plan_renders needs the speaker plan or the dub dialogue")
    if plan is not None and sample_rate is not None:
        from ..speakers.stage import SAMPLE_RATE

        if sample_rate != SAMPLE_RATE:  # the voices were prepared at the speaker stage's rate
            raise RuntimeError(f"the lip-sync model needs {sample_rate} Hz audio, the voices are at {SAMPLE_RATE} Hz")
    for shot, tracking in zip(shots, faces):
        out = str(work / "shots" / shot.id / "segment.mkv")
        if plan is not None:
            drives = {d.track_id: d for d in plan.drives_in(shot.id)}
            if not drives:
                unchanged[shot.id] = ("no face in this shot" if not tracking.tracks
                                      else "no face in this shot speaks a dubbed voice")
                continue
            driven = tuple(t for t in tracking.tracks if t.id in drives)
            jobs.append(ShotJob(str(film), video.fps, shot.frames, driven, drives[driven[0].id].audio, out,
                                track_audio={tid: d.audio for tid, d in drives.items()},
                                speaking={tid: d.speaking for tid, d in drives.items()}, shot_id=shot.id,
                                settings=settings, info=info))
        else:
            if not tracking.tracks:
                unchanged[shot.id] = "no face to lip-sync in this shot"
                continue
            jobs.append(ShotJob(str(film), video.fps, shot.frames, tracking.tracks, str(dialogue), out,
                                shot_id=shot.id, settings=settings, info=info))
    return RenderPlan(tuple(jobs), unchanged)


# --------------------------------------------------------------------------- QC second takes


def retry_params(retry: Any, batch_size: int | None) -> LipSyncParams:
    """The crop / blend / batch of a second take (``options.qc_retry``)."""
    base = LipSyncParams()
    return LipSyncParams(crop=replace(base.crop, top=retry.crop_top, bottom=retry.crop_bottom),
                         blend=replace(base.blend, feather=retry.feather), batch_size=retry.batch_size or batch_size)


def second_takes(report: Any, jobs: Sequence[ShotJob], retry: Any, batch_size: int | None) -> list[tuple[Any, ShotJob]]:
    """The shots to render again -- rendered, with a verdict in ``retry.on`` -- each with its second-take job
    (same inputs, the retry's parameters, written beside the first take as ``segment.take2.mkv``)."""
    by_shot = {j.shot_id: j for j in jobs}
    params = retry_params(retry, batch_size)
    out = []
    for s in report.shots:
        if s.status == "rendered" and s.verdict in retry.on and s.shot_id in by_shot:
            job = by_shot[s.shot_id]
            out.append((s, replace(job, out=str(Path(job.out).with_name("segment.take2.mkv")), params=params)))
    return out


def keep_take(first: Any, second: Any, retry: Any) -> tuple[bool, dict[str, Any]]:
    """Whether the second take is better (:func:`lipsync.qc.shots.take_score`), and the report's note."""
    from ..qc.shots import take_score

    a, b = take_score(first), take_score(second)
    better = b > a
    note = {"takes": [{"take": 1, "verdict": first.verdict, "score": list(a)},
                      {"take": 2, "verdict": second.verdict, "score": list(b),
                       "params": {"crop_top": retry.crop_top, "crop_bottom": retry.crop_bottom, "feather": retry.feather}}],
            "kept": 2 if better else 1}
    return better, note
