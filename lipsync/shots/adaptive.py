"""Hard cuts relative to the local average of change (PySceneDetect's AdaptiveDetector).

Better than ``content`` on fast camera motion, where every frame changes a lot:
a cut must stand out against its neighbours, not just exceed a fixed threshold.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import AdaptiveDetector

from .base import ShotDetector


class AdaptiveShotDetector(ShotDetector):
    name = "adaptive"

    def __init__(
        self, fps: Fraction, min_shot_frames: int, adaptive_threshold: float = 3.0, min_content_val: float = 15.0
    ) -> None:
        super().__init__(fps, min_shot_frames)
        self.adaptive_threshold = adaptive_threshold
        self.min_content_val = min_content_val
        self._impl = AdaptiveDetector(
            adaptive_threshold=adaptive_threshold, min_scene_len=min_shot_frames, min_content_val=min_content_val
        )

    def process_frame(self, index: int, frame: np.ndarray) -> list[int]:
        return [tc.frame_num for tc in self._impl.process_frame(FrameTimecode(index, fps=self.fps), frame)]

    def post_process(self, last_index: int) -> list[int]:
        return [tc.frame_num for tc in self._impl.post_process(FrameTimecode(last_index, fps=self.fps))]

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "adaptive_threshold": self.adaptive_threshold,
            "min_content_val": self.min_content_val,
        }
