"""Shot changes through black: a fade-out followed by a fade-in.

A content detector sees a slow fade as many small changes and finds no cut, or a
cut somewhere inside it.  This detector follows the mean luma: when the picture
goes below ``black_level`` and later comes back, the new shot starts at the middle
of the black gap (a fade that never comes back, or a film that opens with a
fade-in from black, is not a cut: there is no second shot on the other side).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from .base import ShotDetector


class FadeShotDetector(ShotDetector):
    name = "fade"

    def __init__(self, fps: Fraction, min_shot_frames: int, black_level: float = 12.0) -> None:
        super().__init__(fps, min_shot_frames)
        self.black_level = black_level
        self._seen_picture = False  # a non-black frame has been seen since the start
        self._black_start: int | None = None
        self._last_cut = 0

    def process_frame(self, index: int, frame: np.ndarray) -> list[int]:
        # Rec.601 luma of a BGR frame, averaged.
        mean = float(frame.reshape(-1, 3).mean(axis=0) @ np.array([0.114, 0.587, 0.299]))
        black = mean < self.black_level
        cuts: list[int] = []
        if black:
            if self._black_start is None:
                self._black_start = index
        else:
            if self._black_start is not None and self._seen_picture:
                cut = (self._black_start + index) // 2
                if cut - self._last_cut >= self.min_shot_frames:
                    cuts.append(cut)
                    self._last_cut = cut
            self._black_start = None
            self._seen_picture = True
        return cuts

    def params(self) -> dict[str, Any]:
        return {**super().params(), "black_level": self.black_level}
