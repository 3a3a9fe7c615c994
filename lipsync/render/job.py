"""Shot render jobs: picklable descriptions of one shot's lip-sync, and the worker that runs them.

A :class:`ShotJob` names files, not arrays, so it can travel to another process
or machine (Ray); it carries the source's probe and the film's delivery encode, so
a worker neither probes the source again nor guesses the codec.  A
:class:`LipSyncWorker` loads the generator once and renders any number of jobs with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange

from ..media.frames import EncodeSettings
from ..media.probe import MediaInfo
from .audio import read_track_audio
from .engine import LipSyncEngine
from .params import LipSyncParams, ShotRender, TrackDrive


@dataclass(frozen=True)
class ShotJob:
    """Render ``frames`` of ``video`` with each track driven by ``audio``.

    ``audio`` is a WAV whose sample 0 is the film's frame 0 (any channel count;
    downmixed to mono, resampled if needed).  ``track_audio`` optionally gives a
    per-track WAV instead.  ``speaking`` optionally restricts synthesis per track.
    ``settings`` is the film's delivery encode (resolved; the segment is written with
    it and copied into the film as it is), ``None`` for a lossless FFV1 segment;
    ``info`` is the source's probe (``None``: the worker probes it).
    """

    video: str
    fps: Fraction
    frames: FrameRange
    tracks: tuple[FaceTrack, ...]
    audio: str
    out: str
    track_audio: Mapping[str, str] | None = None
    speaking: Mapping[str, tuple[FrameRange, ...]] | None = None
    shot_id: str = ""
    params: LipSyncParams | None = None  # other crop / blend / batch than the worker's (a second take)
    settings: EncodeSettings | None = None
    info: MediaInfo | None = None


class LipSyncWorker:
    """Loads the generator once (in ``__init__``) and renders shot after shot with it."""

    def __init__(self, checkpoint: str, device: str = "auto", params: LipSyncParams = LipSyncParams(), store: str | None = None,
                 generator: str | None = None) -> None:
        from ..device import resolve_device

        self.device = resolve_device(device)
        self.engine = LipSyncEngine.from_checkpoint(checkpoint, self.device, params, store, family=generator)

    def run(self, job: ShotJob) -> ShotRender:
        c = self.engine.contract
        tail = c.mel_step * c.hop_length
        drives = []
        for track in job.tracks:
            src = (job.track_audio or {}).get(track.id, job.audio)
            audio = read_track_audio(src, job.frames, job.fps, c.sample_rate, tail)
            speaking = None if job.speaking is None else job.speaking.get(track.id)
            drives.append(TrackDrive(track, audio, speaking))
        engine = self.engine if job.params is None else self.engine.with_params(job.params)
        return engine.render_shot(job.video, job.frames, drives, job.out, info=job.info, settings=job.settings)


def render_summary(render: ShotRender) -> dict[str, Any]:
    return {"status": "rendered", "segment": str(render.segment), **render.to_dict()}
