"""Lip-sync inference: one shot at a time, streamed, batched, blended.

For every frame of a shot and every face track driven in it, the engine crops the
face (square, padded), feeds the generator the masked crop, the unmasked crop as
reference and the mel window of that frame, and pastes the generated mouth back
with a feathered lower-face mask (and optional colour matching), so no rectangle
edge shows.  Frames are decoded once and encoded once per shot, whatever the
number of tracks, and never more than about one batch of frames is held.

Rules:

* **Training contract**: everything the generator is fed is decided by
  ``model.contract`` (:class:`lipsync.models.wav2lip.Wav2LipContract`), read here
  and nowhere else: the mel window of shot frame ``i`` starts at mel column
  ``floor(i * 80 / fps)`` (the reference's ``int(80. * i / fps)``, exact rational
  arithmetic, any frame rate; :func:`lipsync.audio.mel.mel_window_start`), the face
  crop is resized with bilinear interpolation, and the output is truncated to
  uint8 -- as the published checkpoints were trained and run.
  ``TrackRender.window_sample_starts`` are the frames' exact start samples,
  ``round(i * sample_rate / fps)`` (:func:`lipsync.audio.mel.window_sample_starts`).
* **Parity dump**: an optional ``dump`` hook (:class:`NpzDump`) receives, for every
  generated face, the generator's exact input and output (:class:`GeneratorIO`).
* **Audio length**: the track's audio starts at the shot's first frame; audio
  shorter than the shot is padded with silence, a longer tail is ignored.
* **Missing face / silence**: frames where the track has no observation are left
  untouched.  When a track is given ``speaking`` ranges, only frames inside them
  are synthesised and all others keep the original picture; without ranges, every
  frame of the track is synthesised (silent audio then yields a closed mouth).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange

from .media.frames import EncodeSettings, FrameReader, FrameWriter
from .media.probe import MediaInfo, probe

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- geometry


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


class _BgrDomain:
    """Frames handled as BGR and converted back by the encoder (any pixel format).

    The round trip through the source's YUV costs a little everywhere (about 41 dB
    PSNR for 4:2:0): used only for pixel formats :class:`_I420Domain` cannot take.
    """

    read_fmt = "bgr24"

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)

    def to_bgr(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def paste(
        self, frame: np.ndarray, bgr: np.ndarray, box: tuple[int, int, int, int], patch: np.ndarray, mask: np.ndarray,
        chroma_mask: np.ndarray | None = None,
    ) -> None:
        x1, y1, x2, y2 = box
        region = frame[y1:y2, x1:x2].astype(np.float32)
        frame[y1:y2, x1:x2] = np.clip(region * (1.0 - mask) + patch * mask + 0.5, 0, 255).astype(np.uint8)


class _I420Domain:
    """Frames kept in the source's own 8-bit 4:2:0 planes; only masked pixels change.

    The model sees a BGR conversion; the generated patch is converted back and
    blended into the Y, U and V planes with the mask (chroma with the mask
    averaged over each 2x2 site), so every pixel outside the mask is bit-identical
    to the source.
    """

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
        import cv2

        w, h = self.size
        return cv2.cvtColor(frame.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)

    def paste(
        self, frame: np.ndarray, bgr: np.ndarray, box: tuple[int, int, int, int], patch: np.ndarray, mask: np.ndarray,
        chroma_mask: np.ndarray | None = None,
    ) -> None:
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


def _domain(pix_fmt: str, width: int, height: int) -> "_BgrDomain | _I420Domain":
    if pix_fmt in ("yuv420p", "yuvj420p") and width % 2 == 0 and height % 2 == 0:
        return _I420Domain(width, height, pix_fmt)
    log.info("pixel format %s: lip-sync works through BGR (about 41 dB outside the face)", pix_fmt)
    return _BgrDomain(width, height)


# --------------------------------------------------------------------------- engine


class _Windows:
    """The mel window of any frame of a shot, computed from the shot's audio a block at a time.

    Memory does not grow with the shot: only one block of mel columns (30 s) is kept.
    Each block is the mel of an audio excerpt with a margin of ``_MARGIN_HOPS`` hops on
    both sides; a mel column depends only on the samples under its window (and the
    one before, for pre-emphasis), so the columns kept are exactly those of the
    whole-shot spectrogram; the true ends of the audio keep their reflect padding.
    """

    _BLOCK_COLS = 2400  # 30 s at 80 columns a second
    _MARGIN_HOPS = 4  # 800 samples >= half an FFT (400) + 1 sample of pre-emphasis history

    def __init__(self, audio: np.ndarray, fps: Fraction, contract: Any) -> None:
        self.audio, self.fps, self.contract = audio, fps, contract
        self._block: tuple[int, np.ndarray] | None = None  # (first column, mel columns)

    def _columns(self, c0: int, c1: int) -> np.ndarray:
        """Exact mel columns ``[c0, c1)`` of the whole audio (padded with silence past its end)."""
        from .audio.mel import melspectrogram

        hop = self.contract.hop_length
        total = 1 + len(self.audio) // hop
        a = max(0, (c0 - self._MARGIN_HOPS) * hop)
        b = min(len(self.audio), (c1 + self._MARGIN_HOPS) * hop)
        if b >= len(self.audio):
            b = len(self.audio)
        mel = melspectrogram(self.audio[a:b], self.contract)
        first = a // hop  # column j of ``mel`` is column first + j of the whole audio
        out = np.full((mel.shape[0], c1 - c0), self.contract.mel.silence_value, dtype=np.float32)
        lo, hi = max(c0, first), min(c1, first + mel.shape[1], total)
        if hi > lo:
            out[:, lo - c0 : hi - c0] = mel[:, lo - first : hi - first]
        return out

    def __getitem__(self, frame: int) -> np.ndarray:
        from .audio.mel import mel_window_start

        c = self.contract
        start = mel_window_start(frame, self.fps, c)
        if self._block is None or not (self._block[0] <= start and start + c.mel_step <= self._block[0] + self._block[1].shape[1]):
            c0 = start
            self._block = (c0, self._columns(c0, c0 + self._BLOCK_COLS + c.mel_step))
        c0, cols = self._block
        return cols[None, :, start - c0 : start - c0 + c.mel_step].copy()


@dataclass
class _Item:
    """One face to generate: where it goes and what goes in."""

    slot: int  # index into the pending frame buffer
    box: tuple[int, int, int, int]
    face: np.ndarray  # (S, S, 3) uint8 crop resized to the model's face size
    mel: np.ndarray  # (1, n_mels, mel_step)
    track_id: str = ""
    frame: int = -1  # frame index in the video


@dataclass(frozen=True)
class GeneratorIO:
    """What the generator got and gave for one face of one frame (float32, as fed to / returned by it).

    ``face_input`` ``(6, S, S)`` in 0..1 (masked target + reference, BGR), ``mel``
    ``(n_mels, mel_step)``, ``output`` ``(3, S, S)`` before conversion to pixels;
    ``frame`` is the frame index in the video, ``box`` the crop ``(x1, y1, x2, y2)``.
    """

    track_id: str
    frame: int
    box: tuple[int, int, int, int]
    face_input: np.ndarray
    mel: np.ndarray
    output: np.ndarray


DumpHook = Callable[[GeneratorIO], None]


class NpzDump:
    """A dump hook writing ``frame-NNNNNN.npz`` (``NNNNNN`` = frame index) per generated face under ``root``.

    Each file holds float32 ``face_input`` (6x96x96), ``mel`` (80x16) and ``output``
    (3x96x96), plus int ``box``.  ``per_track=True`` (several driven faces) puts
    each track's files in ``root/<track id>/``.
    """

    def __init__(self, root: str | Path, per_track: bool = False) -> None:
        self.root = Path(root)
        self.per_track = per_track
        self.written = 0

    def path_for(self, track_id: str, frame: int) -> Path:
        folder = self.root / _safe_name(track_id) if self.per_track else self.root
        return folder / f"frame-{frame:06d}.npz"

    def __call__(self, io: GeneratorIO) -> None:
        path = self.path_for(io.track_id, io.frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, face_input=io.face_input.astype(np.float32), mel=io.mel.astype(np.float32),
                 output=io.output.astype(np.float32), box=np.asarray(io.box, dtype=np.int64))
        self.written += 1


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)).strip(".")
    return cleaned or "track"


class LipSyncEngine:
    """Owns a loaded generator, its device and batching; renders shots.

    The model's input contract (``model.contract``: face size, masking row, mel
    window, sample rate, hop) is read here and nowhere else.
    """

    def __init__(
        self,
        model: Any,
        device: str = "cpu",
        params: LipSyncParams = LipSyncParams(),
        *,
        contract: Any = None,
        dump: DumpHook | None = None,
    ) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # The training contract (window start, resize, output conversion): the model's unless overridden.
        self.contract = contract or getattr(model, "contract", None) or type(model).contract
        self.params = params
        self.batch_size = params.batch_size or (128 if self.device.type == "cuda" else 16)
        self.dump = dump

    def with_params(self, params: LipSyncParams) -> "LipSyncEngine":
        """The same loaded generator with other crop / blend / batch parameters (for a second take)."""
        import copy

        other = copy.copy(self)
        other.params = params
        other.batch_size = params.batch_size or self.batch_size
        return other

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu", params: LipSyncParams = LipSyncParams(), store: str | None = None) -> "LipSyncEngine":
        from . import store as model_store
        from .models.wav2lip import load_wav2lip

        path = model_store.resolve(checkpoint, store)
        return cls(load_wav2lip(path, device), device, params)

    # ---- audio

    def windows_for(self, audio: np.ndarray, frame_count: int, fps: Fraction) -> tuple["_Windows", tuple[int, ...]]:
        """Mel windows of a shot's audio, cut per frame on demand, and each frame's start sample.

        Windows are computed a block at a time (:class:`_Windows`), never all at once,
        so memory stays small for long shots."""
        from .audio.mel import window_sample_starts

        starts = tuple(int(s) for s in window_sample_starts(frame_count, fps, self.contract))
        return _Windows(np.asarray(audio, dtype=np.float32), fps, self.contract), starts

    # ---- generator

    def _generate(self, items: list[_Item]) -> np.ndarray:
        """Run the generator on ``items``; returns ``(N, S, S, 3)`` uint8 BGR faces (``contract.output`` conversion)."""
        torch = self.torch
        c = self.contract
        faces = np.stack([it.face for it in items]).astype(np.float32) / 255.0  # N,S,S,3 BGR
        masked = faces.copy()
        masked[:, c.mask_row :, :, :] = 0.0
        x = np.ascontiguousarray(np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2))  # N,6,S,S
        mels = np.stack([it.mel for it in items]).astype(np.float32)  # N,1,n_mels,mel_step
        with torch.inference_mode():
            out = self.model(torch.from_numpy(mels).to(self.device), torch.from_numpy(x).to(self.device))
        raw = out.float().cpu().numpy()  # N,3,S,S
        if self.dump is not None:
            for k, it in enumerate(items):
                self.dump(GeneratorIO(it.track_id, it.frame, it.box, x[k], mels[k, 0], raw[k]))
        return c.output_to_uint8(raw.transpose(0, 2, 3, 1))

    def generate(self, items: list[_Item]) -> np.ndarray:
        """Generate in chunks of ``batch_size``; on CUDA out-of-memory halve the batch and retry."""
        torch = self.torch
        outputs: list[np.ndarray] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self.batch_size]
            try:
                outputs.append(self._generate(chunk))
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                if self.batch_size == 1 or self.params.batch_size is not None:
                    raise LipSyncOutOfMemoryError(
                        f"Wav2Lip ran out of GPU memory at batch_size={self.batch_size} on {self.device}; "
                        f"lower batch_size (e.g. batch_size={max(1, self.batch_size // 2)}), or free the GPU"
                    ) from exc
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of GPU memory: batch_size lowered to %d", self.batch_size)
                continue
            start += len(chunk)
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.uint8)

    # ---- paste

    def paste(self, domain: "_BgrDomain | _I420Domain", frame: np.ndarray, bgr: np.ndarray, item: _Item, generated: np.ndarray) -> None:
        """Blend one generated face into ``frame`` (in its domain); ``bgr`` is the frame as the model saw it."""
        import cv2

        x1, y1, x2, y2 = item.box
        h, w = y2 - y1, x2 - x1
        patch = cv2.resize(generated, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        mask = blend_mask(h, w, self.params.blend)  # cached per crop size
        if self.params.blend.colour_match:
            patch = match_colour(patch, bgr[y1:y2, x1:x2], mask)
        chroma = _chroma_mask(h, w, self.params.blend) if isinstance(domain, _I420Domain) else None
        domain.paste(frame, bgr, item.box, patch, mask, chroma)

    # ---- shot

    def render_shot(
        self,
        video: str | Path,
        frames: FrameRange,
        drives: Sequence[TrackDrive],
        out: str | Path,
        *,
        info: MediaInfo | None = None,
        progress: Progress | None = None,
    ) -> ShotRender:
        """Render ``frames`` of ``video`` with every drive applied; write a lossless segment to ``out``.

        The segment is FFV1 in the source's pixel format, ready for
        :func:`lipsync.media.assemble.assemble`.
        """
        info = info or probe(video)
        v = info.require_video()
        c = self.contract
        plans = []
        for d in drives:
            windows, starts = self.windows_for(d.audio, frames.duration, v.fps)
            plans.append((d, windows, starts))
        counts = {d.track.id: {"synthesized": 0, "untouched": {}} for d in drives}

        def untouched(track_id: str, reason: str, n: int = 1) -> None:
            u = counts[track_id]["untouched"]
            u[reason] = u.get(reason, 0) + n

        domain = _domain(v.pix_fmt, v.width, v.height)
        even = isinstance(domain, _I420Domain)
        pending: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (frame in its domain, BGR view for the model)
        items: list[_Item] = []
        written = 0

        def flush(writer: FrameWriter) -> None:
            nonlocal written, items
            if items:
                generated = self.generate(items)
                for it, g in zip(items, generated):
                    frame, bgr = pending[it.slot]
                    self.paste(domain, frame, bgr, it, g)
                items = []
            while pending:
                writer.write(pending.popleft()[0])
                written += 1
                if progress is not None:
                    progress(written, frames.duration)

        with FrameWriter(
            out, width=v.width, height=v.height, fps=v.fps, pix_fmt=domain.read_fmt,
            settings=EncodeSettings(codec="ffv1", crf=None, preset=None, pix_fmt=v.pix_fmt),
            like=v, expected_frames=frames.duration,
        ) as writer:
            for offset, raw in enumerate(FrameReader(video, frames=frames, pix_fmt=domain.read_fmt, info=info)):
                index = frames.start + offset
                frame = np.array(raw)  # writable copy owned by the buffer
                bgr = domain.to_bgr(frame)
                slot = len(pending)
                pending.append((frame, bgr))
                for d, windows, _ in plans:
                    obs = d.track.at(index)
                    if obs is None:  # the track is not in this frame
                        untouched(d.track.id, "no face")
                        continue
                    if d.speaking is not None and not any(index in r for r in d.speaking):
                        untouched(d.track.id, "silent")
                        continue
                    box = crop_box(obs.box, self.params.crop, (v.width, v.height), even=even)
                    x1, y1, x2, y2 = box
                    face = c.resize_face(bgr[y1:y2, x1:x2])
                    items.append(_Item(slot, box, face, windows[offset], d.track.id, index))
                    counts[d.track.id]["synthesized"] += 1
                # Bounded memory: at most one batch of faces, or of frames, is ever pending.
                if len(items) >= self.batch_size or len(pending) >= self.batch_size:
                    flush(writer)
            flush(writer)
        renders = tuple(
            TrackRender(d.track.id, counts[d.track.id]["synthesized"], dict(counts[d.track.id]["untouched"]), starts)
            for d, _, starts in plans
        )
        return ShotRender(Path(out), frames, renders, self.batch_size)
