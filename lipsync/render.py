"""Shot render jobs: picklable descriptions of one shot's lip-sync, and the worker that runs them.

A :class:`ShotJob` names files, not arrays, so it can travel to another process
or machine (Ray); a :class:`LipSyncWorker` loads the generator once and renders
any number of jobs with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import soundfile as sf

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange, frame_to_sample

from .inference import LipSyncEngine, LipSyncParams, ShotRender, TrackDrive


@dataclass(frozen=True)
class ShotJob:
    """Render ``frames`` of ``video`` with each track driven by ``audio``.

    ``audio`` is a WAV whose sample 0 is the film's frame 0 (any channel count;
    downmixed to mono, resampled if needed).  ``track_audio`` optionally gives a
    per-track WAV instead.  ``speaking`` optionally restricts synthesis per track.
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


def read_track_audio(path: str | Path, frames: FrameRange, fps: Fraction, sample_rate: int, tail_samples: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` from the first sample of ``frames`` to ``tail_samples`` past its end."""
    info = sf.info(str(path))
    if info.samplerate != sample_rate:
        raise ValueError(
            f"{path}: audio at {info.samplerate} Hz, the lip-sync model needs {sample_rate} Hz; "
            f"resample it first (lipsync.media.audio.to_wav(..., sample_rate={sample_rate}))"
        )
    start = frame_to_sample(frames.start, fps, sample_rate)
    stop = frame_to_sample(frames.end, fps, sample_rate) + tail_samples
    data, _ = sf.read(str(path), start=min(start, info.frames), stop=min(stop, info.frames), dtype="float32", always_2d=True)
    return data.mean(axis=1)


class LipSyncWorker:
    """Loads the generator once (in ``__init__``) and renders shot after shot with it."""

    def __init__(self, checkpoint: str, device: str = "auto", params: LipSyncParams = LipSyncParams(), store: str | None = None) -> None:
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.engine = LipSyncEngine.from_checkpoint(checkpoint, device, params, store)

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
        return engine.render_shot(job.video, job.frames, drives, job.out)


def render_summary(render: ShotRender) -> dict[str, Any]:
    return {"status": "rendered", "segment": str(render.segment), **render.to_dict()}
