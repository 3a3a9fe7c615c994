"""Hard cuts from frame-to-frame change of hue, saturation and luma (PySceneDetect's ContentDetector)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

from .base import ShotDetector


class ContentShotDetector(ShotDetector):
    """PySceneDetect's ``ContentDetector``: a cut where the HSV content score jumps
    above ``threshold`` (27 by default, PySceneDetect's own)."""

    name = "content"

    def __init__(self, fps: Fraction, min_shot_frames: int, threshold: float = 27.0) -> None:
        super().__init__(fps, min_shot_frames)
        self.threshold = threshold
        self._impl = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames)

    def process_frame(self, index: int, frame: np.ndarray) -> list[int]:
        return [tc.frame_num for tc in self._impl.process_frame(FrameTimecode(index, fps=self.fps), frame)]

    def post_process(self, last_index: int) -> list[int]:
        return [tc.frame_num for tc in self._impl.post_process(FrameTimecode(last_index, fps=self.fps))]

    def params(self) -> dict[str, Any]:
        return {**super().params(), "threshold": self.threshold}
