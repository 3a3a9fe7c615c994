"""The face crop of syncnet_python's ``crop_video`` (also Light-ASD's ``Columbia_test.crop_video``), written once.

Both references cut a face track the same way; only the numbers (in each model's
contract) and what is done with the cut differ:

* per track, box half-size ``s = max(w, h) / 2`` and centre ``(x, y)`` of every
  frame, each median-filtered over the track (:func:`crop_geometry`:
  ``scipy.signal.medfilt`` semantics, zero padding at both ends, kernel capped at
  ``2n - 1`` for a track of ``n`` frames so the padding cannot win the median);
* the frame is padded by ``bsi = int(s * (1 + 2 cs))`` pixels of ``pad_value``,
  and rows ``[int(y + bsi - s), int(y + bsi + s (1 + 2 cs)))``, columns
  ``[int(x + bsi - s (1 + cs)), int(x + bsi + s (1 + cs)))`` of the padded frame
  are cut (:func:`crop_region`, ``cs`` the crop scale, 0.4 in both).

SyncNet (:func:`lipsync.qc.lse.crop_face`) resizes the cut to 224 x 224 BGR;
Light-ASD (:func:`lipsync.speakers.asd.face_crop`) resizes it to 224 x 224, turns
it gray and keeps the centre 112 x 112.
"""

from __future__ import annotations

import numpy as np

from dubcore.records import FaceTrack

__all__ = ["crop_geometry", "crop_region", "medfilt_zero"]


def _median_zero_padded(x: np.ndarray, kernel: int) -> np.ndarray:
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1)


def medfilt_zero(values: np.ndarray, kernel: int) -> np.ndarray:
    """``scipy.signal.medfilt(values, kernel)`` for 1-D input: zero padding of ``kernel // 2`` at both ends, any length."""
    x = np.asarray(values, dtype=np.float64)
    if kernel % 2 != 1:
        raise ValueError(f"median kernel must be odd, got {kernel}")
    if len(x) == 0 or kernel == 1:
        return x.copy()
    return _median_zero_padded(x, kernel)


def _medfilt_capped(values: np.ndarray, kernel: int) -> np.ndarray:
    """:func:`medfilt_zero` with the kernel capped at ``2n - 1`` for ``n`` values."""
    x = np.asarray(values, dtype=np.float64)
    k = min(int(kernel), 2 * len(x) - 1)
    if k <= 1:
        return x.copy()
    return _median_zero_padded(x, k)


def crop_geometry(track: FaceTrack, kernel: int) -> np.ndarray:
    """``(n, 3)`` rows ``(x, y, s)``: box centre and half-size of every frame of ``track``, median-filtered with ``kernel``."""
    boxes = np.array([o.box for o in track.observations], dtype=np.float64).reshape(-1, 4)
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    return np.stack([_medfilt_capped(x, kernel), _medfilt_capped(y, kernel), _medfilt_capped(s, kernel)], axis=1)


def crop_region(frame: np.ndarray, x: float, y: float, s: float, crop_scale: float, pad_value: int) -> np.ndarray | None:
    """The cut of ``frame`` (uint8, ``(h, w)`` or ``(h, w, C)``) around centre ``(x, y)``, half-size ``s``, before any resize.

    Equivalent to padding the frame by ``bsi = int(s * (1 + 2 * crop_scale))``
    pixels of ``pad_value`` on every side and slicing it as the references do,
    without building the padded frame.  Slice ends past the padded frame are
    clipped as numpy clips them; a start before it (a centre far outside the
    picture) is clamped to 0 instead of wrapping around.  None when the cut is
    empty.
    """
    cs, bs = crop_scale, float(s)
    bsi = int(bs * (1 + 2 * cs))
    h, w = frame.shape[:2]
    my, mx = y + bsi, x + bsi
    ph, pw = h + 2 * bsi, w + 2 * bsi
    r0, r1 = int(my - bs), int(my + bs * (1 + 2 * cs))
    c0, c1 = int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs))
    r0, r1 = min(max(r0, 0), ph), min(max(r1, 0), ph)
    c0, c1 = min(max(c0, 0), pw), min(max(c1, 0), pw)
    if r1 <= r0 or c1 <= c0:
        return None
    region = np.full((r1 - r0, c1 - c0) + frame.shape[2:], pad_value, dtype=np.uint8)
    # Rows/cols of the padded frame -> of the frame.
    fr0, fr1 = max(r0 - bsi, 0), min(r1 - bsi, h)
    fc0, fc1 = max(c0 - bsi, 0), min(c1 - bsi, w)
    if fr1 > fr0 and fc1 > fc0:
        region[fr0 + bsi - r0 : fr1 + bsi - r0, fc0 + bsi - c0 : fc1 + bsi - c0] = frame[fr0:fr1, fc0:fc1]
    return region
