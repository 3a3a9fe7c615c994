"""How visible a paste is: the largest step of the picture's change across the blend mask's border.

``(output - source)`` is the change a paste made.  Where the mask is 0 the change must
be 0 (the original picture); a seamless paste lets the change grow smoothly from
there.  The measure is the largest difference of that change between two
neighbouring pixels (horizontal or vertical) of which exactly one lies on the
mask's support, in grey levels of the plane given (luma, usually).
"""

from __future__ import annotations

import numpy as np


def border_step(source: np.ndarray, output: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray) -> int:
    """Largest step across the border of ``mask`` (``(h, w)`` weights of the crop ``box = (x1, y1, x2, y2)``)."""
    x1, y1, x2, y2 = box
    H, W = source.shape
    a0, b0, a1, b1 = max(0, y1 - 1), max(0, x1 - 1), min(H, y2 + 1), min(W, x2 + 1)
    diff = output[a0:a1, b0:b1].astype(np.int32) - source[a0:a1, b0:b1].astype(np.int32)
    support = np.zeros(diff.shape, bool)
    support[y1 - a0 : y2 - a0, x1 - b0 : x2 - b0] = np.asarray(mask).reshape(y2 - y1, x2 - x1) > 0
    worst = 0
    for axis in (0, 1):
        n = diff.shape[axis]
        lo, hi = [slice(None)] * 2, [slice(None)] * 2
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        cross = support[tuple(lo)] != support[tuple(hi)]
        if cross.any():
            worst = max(worst, int(np.abs(diff[tuple(lo)] - diff[tuple(hi)])[cross].max()))
    return worst
