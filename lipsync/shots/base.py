"""The one abstract base every shot-boundary detector implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from fractions import Fraction
from typing import Any

import numpy as np


class ShotDetector(ABC):
    """Sees every frame of a film once, in order, and reports where new shots start.

    Frames arrive downscaled, as ``(H, W, 3)`` uint8 BGR.  Cut positions are 0-based
    indices of the first frame of the new shot; a detector may report a cut for a
    frame it saw earlier (to look ahead), never one it has not seen yet.
    """

    #: Name under which the detector is registered in :data:`lipsync.shots.DETECTORS`.
    name: str = ""

    def __init__(self, fps: Fraction, min_shot_frames: int) -> None:
        self.fps = fps
        self.min_shot_frames = min_shot_frames

    @abstractmethod
    def process_frame(self, index: int, frame: np.ndarray) -> list[int]:
        """Consume frame ``index``; return the cuts now known."""

    def post_process(self, last_index: int) -> list[int]:
        """Called once after the last frame; return any cut still pending."""
        return []

    def params(self) -> dict[str, Any]:
        """Parameters that identify this detector's behaviour (written to shots.json)."""
        return {"min_shot_frames": self.min_shot_frames}
