"""Where a generated face goes: the crop of a face box, the feathered blend mask, colour matching,
and the two frame domains (the source's own 4:2:0 planes, or BGR) the paste works in."""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np

from .params import BlendParams, CropParams

log = logging.getLogger(__name__)


def crop_box(
    box: Sequence[float], params: CropParams, frame_size: tuple[int, int], even: bool = False
) -> tuple[int, int, int, int]:
    """Integer crop ``(x1, y1, x2, y2)`` for a face box: padded, squared, kept inside the frame.

    ``even`` aligns every edge to an even pixel (4:2:0 chroma sites)."""
    w_img, h_img = frame_size
    x1, y1, x2, y2 = (float(v) for v in box)
    h = max(1.0, y2 - y1)
    x1 -= params.left * h
    x2 += params.right * h
    y1 -= params.top * h
    y2 += params.bottom * h
    if params.square:
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        side = min(side, float(w_img), float(h_img))
        x1, x2 = cx - side / 2, cx + side / 2
        y1, y2 = cy - side / 2, cy + side / 2
        # Shift (not shrink) a square that leaves the frame, so it stays square.
        dx = -x1 if x1 < 0 else (w_img - x2 if x2 > w_img else 0.0)
        dy = -y1 if y1 < 0 else (h_img - y2 if y2 > h_img else 0.0)
        x1, x2, y1, y2 = x1 + dx, x2 + dx, y1 + dy, y2 + dy
    ix1, iy1 = max(0, int(round(x1))), max(0, int(round(y1)))
    ix2, iy2 = min(w_img, int(round(x2))), min(h_img, int(round(y2)))
    if even:
        ix1, iy1 = ix1 - ix1 % 2, iy1 - iy1 % 2
        ix2, iy2 = min(w_img - w_img % 2, ix2 + ix2 % 2), min(h_img - h_img % 2, iy2 + iy2 % 2)
        return ix1, iy1, max(ix1 + 2, ix2), max(iy1 + 2, iy2)
    return ix1, iy1, max(ix1 + 1, ix2), max(iy1 + 1, iy2)


def _ramp_profile(n: int, lo: float, hi: float, feather: float) -> np.ndarray:
    """1-D weights at pixel centres ``j + 0.5``: 0 outside ``[lo, hi]`` (pixels), smoothstep up over ``feather`` px."""
    x = np.arange(n, dtype=np.float64) + 0.5
    f = max(feather, 1e-6)
    up = np.clip((x - lo) / f, 0.0, 1.0)
    down = np.clip((hi - x) / f, 0.0, 1.0)
    t = np.minimum(up, down)
    return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=64)
def blend_mask(height: int, width: int, params: BlendParams) -> np.ndarray:
    """Float32 ``(height, width, 1)`` mask in [0, 1]: 1 over the lower face, exactly 0 at and near the crop border.

    Separable: a vertical profile (zero above ``mask_top`` and below ``mask_bottom``)
    times a horizontal one (zero within ``mask_side`` of each side), each rising by
    a smoothstep over ``feather * max(height, width)`` pixels.  The zero region
    always includes the outermost row / column on every side.  Computed once per
    (size, params) and cached (read-only array; at most 64 sizes are kept).
    """
    size = max(height, width)
    feather = max(1.0, params.feather * size)
    top = max(1.0, params.mask_top * height)
    bottom = min(height - 1.0, params.mask_bottom * height)
    side = max(1.0, params.mask_side * width)
    rows = _ramp_profile(height, top, bottom, feather)
    cols = _ramp_profile(width, side, width - side, feather)
    mask = np.outer(rows, cols).astype(np.float32)[:, :, None]
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=64)
def _chroma_mask(height: int, width: int, params: BlendParams) -> np.ndarray:
    """:func:`blend_mask` averaged over each 2x2 chroma site of a 4:2:0 crop (even sizes), cached."""
    m = blend_mask(height, width, params)[:, :, 0]
    mc = m.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    mc.setflags(write=False)
    return mc


def match_colour(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift each channel of ``generated`` to the mean and spread of ``original`` under ``mask``."""
    weight = mask[:, :, 0]
    total = float(weight.sum())
    if total < 1.0:
        return generated
    out = generated.astype(np.float32)
    ref = original.astype(np.float32)
    for c in range(3):
        g, r = out[:, :, c], ref[:, :, c]
        gm, rm = float((g * weight).sum() / total), float((r * weight).sum() / total)
        gs = float(np.sqrt(((g - gm) ** 2 * weight).sum() / total)) + 1e-3
        rs = float(np.sqrt(((r - rm) ** 2 * weight).sum() / total)) + 1e-3
        out[:, :, c] = (g - gm) * min(2.0, rs / gs) + rm
    return np.clip(out, 0, 255)


# --------------------------------------------------------------------------- frame domains


class BgrDomain:
    """Frames handled as BGR and converted back by the encoder (any pixel format).

    The round trip through the source's YUV costs a little everywhere (about 41 dB
    PSNR for 4:2:0): used only for pixel formats :class:`I420Domain` cannot take.
    """

    read_fmt = "bgr24"
    even = False

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)

    def to_bgr(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def crop_bgr(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The BGR pixels of ``box`` (a copy: the frame may be pasted into later)."""
        x1, y1, x2, y2 = box
        return frame[y1:y2, x1:x2].copy()

    def paste(self, frame: np.ndarray, box: tuple[int, int, int, int], patch: np.ndarray, mask: np.ndarray,
              chroma_mask: np.ndarray | None = None) -> None:
        x1, y1, x2, y2 = box
        region = frame[y1:y2, x1:x2].astype(np.float32)
        frame[y1:y2, x1:x2] = np.clip(region * (1.0 - mask) + patch * mask + 0.5, 0, 255).astype(np.uint8)


class I420Domain:
    """Frames kept in the source's own 8-bit 4:2:0 planes; only masked pixels change.

    The model sees a BGR conversion of the face's crop only (crops are aligned to
    even pixels, so it equals the crop of the whole frame's conversion); the
    generated patch is converted back and blended into the Y, U and V planes with
    the mask (chroma with the mask averaged over each 2x2 site), so every pixel
    outside the mask is bit-identical to the source.
    """

    even = True

    def __init__(self, width: int, height: int, read_fmt: str) -> None:
        self.size = (width, height)
        self.read_fmt = read_fmt

    def _planes(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.size
        y = frame[: w * h].reshape(h, w)
        u = frame[w * h : w * h + (w // 2) * (h // 2)].reshape(h // 2, w // 2)
        v = frame[w * h + (w // 2) * (h // 2) :].reshape(h // 2, w // 2)
        return y, u, v

    def to_bgr(self, frame: np.ndarray) -> np.ndarray:
        """The whole frame in BGR (training sets; the renderer converts only the crops)."""
        import cv2

        w, h = self.size
        return cv2.cvtColor(frame.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)

    def crop_bgr(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The BGR pixels of ``box`` (even-aligned), converted from the crop's planes only."""
        import cv2

        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        Y, U, V = self._planes(frame)
        buf = np.empty(w * h * 3 // 2, dtype=np.uint8)
        q = (w // 2) * (h // 2)
        buf[: w * h] = Y[y1:y2, x1:x2].ravel()
        buf[w * h : w * h + q] = U[y1 // 2 : y2 // 2, x1 // 2 : x2 // 2].ravel()
        buf[w * h + q :] = V[y1 // 2 : y2 // 2, x1 // 2 : x2 // 2].ravel()
        return cv2.cvtColor(buf.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)

    def paste(self, frame: np.ndarray, box: tuple[int, int, int, int], patch: np.ndarray, mask: np.ndarray,
              chroma_mask: np.ndarray | None = None) -> None:
        import cv2

        x1, y1, x2, y2 = box
        h, w = y2 - y1, x2 - x1
        yuv = cv2.cvtColor(np.clip(patch + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2YUV_I420).reshape(-1)
        py = yuv[: w * h].reshape(h, w).astype(np.float32)
        pu = yuv[w * h : w * h + (w // 2) * (h // 2)].reshape(h // 2, w // 2).astype(np.float32)
        pv = yuv[w * h + (w // 2) * (h // 2) :].reshape(h // 2, w // 2).astype(np.float32)
        m = mask[:, :, 0]
        mc = chroma_mask if chroma_mask is not None else m.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        Y, U, V = self._planes(frame)
        for plane, new, mm, (a, b, c, d) in (
            (Y, py, m, (y1, y2, x1, x2)),
            (U, pu, mc, (y1 // 2, y2 // 2, x1 // 2, x2 // 2)),
            (V, pv, mc, (y1 // 2, y2 // 2, x1 // 2, x2 // 2)),
        ):
            old = plane[a:b, c:d].astype(np.float32)
            blended = np.clip(old * (1.0 - mm) + new * mm + 0.5, 0, 255).astype(np.uint8)
            # Where the mask is zero the source byte is kept exactly.
            plane[a:b, c:d] = np.where(mm > 0, blended, plane[a:b, c:d])


def frame_domain(pix_fmt: str, width: int, height: int) -> "BgrDomain | I420Domain":
    """The domain a source's frames are pasted in: its own 4:2:0 planes when it has them, else BGR."""
    if pix_fmt in ("yuv420p", "yuvj420p") and width % 2 == 0 and height % 2 == 0:
        return I420Domain(width, height, pix_fmt)
    log.info("pixel format %s: lip-sync works through BGR (about 41 dB outside the face)", pix_fmt)
    return BgrDomain(width, height)


def paste_face(domain: "BgrDomain | I420Domain", frame: np.ndarray, box: tuple[int, int, int, int], original: np.ndarray,
               generated: np.ndarray, params: BlendParams) -> None:
    """Blend one generated face (``S x S`` BGR uint8) into ``frame`` at ``box``; ``original`` is the
    box's BGR pixels as the model saw them (for colour matching)."""
    import cv2

    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    patch = cv2.resize(generated, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    mask = blend_mask(h, w, params)  # cached per crop size
    if params.colour_match:
        patch = match_colour(patch, original, mask)
    chroma = _chroma_mask(h, w, params) if isinstance(domain, I420Domain) else None
    domain.paste(frame, box, patch, mask, chroma)
