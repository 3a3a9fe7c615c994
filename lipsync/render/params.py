"""What a lip-sync render is asked to do and what it reports: parameters, drives, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange

Progress = Callable[[int, int], None]


class LipSyncOutOfMemoryError(RuntimeError):
    """The generator ran out of device memory even at the smallest batch tried."""


@dataclass(frozen=True)
class CropParams:
    """How a face box becomes the generator's square input.

    Pads are fractions of the box height added to each side (Wav2Lip pads the chin
    by 10 px on 96-px-ish faces: ``bottom=0.1``).  ``square`` grows the padded box
    to a square around its centre so the resize keeps the face's aspect.
    """

    top: float = 0.0
    bottom: float = 0.1
    left: float = 0.0
    right: float = 0.0
    square: bool = True


@dataclass(frozen=True)
class BlendParams:
    """Where and how the generated face replaces the original.

    The mask covers the lower face: it is exactly zero above ``mask_top`` and below
    ``mask_bottom`` (fractions of the crop height) and within ``mask_side`` of each
    side (fraction of the width) -- always at least the crop's outermost pixel row
    and column, so it reaches zero *inside* the crop on every side and no edge of
    the pasted patch shows -- and rises to 1 over ``feather`` x crop size with a
    smoothstep (zero slope at both ends).  ``colour_match`` shifts the generated
    pixels' per-channel mean and spread to the original's inside the mask.
    """

    mask_top: float = 0.40
    mask_bottom: float = 0.98
    mask_side: float = 0.08
    feather: float = 0.15
    colour_match: bool = True


@dataclass(frozen=True)
class LipSyncParams:
    crop: CropParams = field(default_factory=CropParams)
    blend: BlendParams = field(default_factory=BlendParams)
    batch_size: int | None = None  # None: automatic (16 on CPU, 128 on CUDA, halved on OOM)


@dataclass(frozen=True)
class TrackDrive:
    """One track to lip-sync and the audio that drives it.

    ``audio`` is mono float32 at the model's sample rate, starting at the shot's
    first frame.  ``speaking`` restricts synthesis to those frame ranges (absolute
    film frames); ``None`` means every frame of the track.
    """

    track: FaceTrack
    audio: np.ndarray
    speaking: tuple[FrameRange, ...] | None = None


@dataclass(frozen=True)
class TrackRender:
    track_id: str
    synthesized: int
    untouched: dict[str, int]  # reason -> frame count
    window_sample_starts: tuple[int, ...]  # per shot frame: first audio sample of its mel window


@dataclass(frozen=True)
class ShotRender:
    segment: Path
    frames: FrameRange
    tracks: tuple[TrackRender, ...]
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": str(self.segment),
            "frames": self.frames.to_list(),
            "batch_size": self.batch_size,
            "tracks": [
                {"id": t.track_id, "synthesized": t.synthesized, "untouched": t.untouched} for t in self.tracks
            ],
        }


