"""LSE-D and LSE-C: SyncNet's lip-sync error, computed as syncnet_python's ``SyncNetInstance.evaluate``.

These are the numbers the Wav2Lip paper (and most lip-sync work since) reports:
LSE-D, the mean distance between lip and audio embeddings at the best offset
(lower is better), and LSE-C, the median over offsets minus that minimum (higher
is better).  The network is :class:`lipsync.models.syncnet.SyncNet`; every
constant comes from its :class:`~lipsync.models.syncnet.SyncNetContract`.

Face crops (:func:`syncnet_crops`, reference ``run_pipeline.crop_video``)
    Box half-size ``s = max(w, h) / 2`` and centre of every frame of the track,
    median-filtered over the track with kernel 13
    (:func:`lipsync.faces.crop.crop_geometry`: ``scipy.signal.medfilt``
    semantics, kernel capped at ``2n - 1`` for tracks under 7 frames).  The frame
    is padded by ``bsi = int(s * 1.8)`` pixels of 110; rows ``[y + bsi - s, y + bsi
    + 1.8 s)`` and columns ``[x + bsi - 1.4 s, x + bsi + 1.4 s)`` of the padded
    frame are cut (``int()`` of each bound, numpy slice clipping) and resized to
    224 x 224 (bilinear).  Colour stays BGR, values 0..255.  The reference writes
    these crops to an XVID file and reads them back as JPEGs; that lossy round
    trip is not reproduced.

Audio (:func:`syncnet_mfcc`)
    ``python_speech_features.mfcc`` with its defaults on the 16 kHz signal at the
    16-bit PCM scale: float audio (-1..1) is rounded from ``x * 32768`` and
    clipped, as ffmpeg's ``pcm_s16le`` gives it to the reference; int16 PCM (what
    the reference's ``wavfile.read`` returns) is used as is.  Any other sample type
    is refused.  The track's audio starts at ``audio_start_sample``; samples before
    the array are silence.

Windows (:func:`score_lse`)
    Frames are put on a 25 fps timeline by time (tick ``j`` shows source frame
    ``floor((j + 0.5) * fps / 25)``; the identity at 25 fps), as the reference's
    ``ffmpeg -r 25`` conversion does.  Window ``i`` is ticks ``i .. i+4`` as
    ``(3, 5, 224, 224)`` and MFCC steps ``4i .. 4i+19`` as ``(1, 13, 20)``.
    Window count, by default the reference's (``window_rule="syncnet_python"``):
    ``min_length - 5`` with ``min_length = min(m, floor(audio / 640))`` for ``m``
    ticks and ``audio`` samples from ``audio_start_sample`` to the end of the
    array -- the count is capped by the audio, and the last complete window is
    never scored (``lastframe = min_length - 5``; every batch, the last partial one
    included, is scored).  ``window_rule="all"`` scores every complete window,
    ``m - 4``, reading silence past the end of the array.  The reference drops
    tracks of 100 frames or fewer; here any track with at least one window is
    scored.

Distances and scores (:func:`calc_pdist`, :func:`lse_from_distances`)
    Audio embeddings are zero-padded by 15 windows on each side; window ``i``'s lip
    embedding is compared (``torch.nn.functional.pairwise_distance``, eps 1e-6)
    with padded audio embeddings ``i .. i+30`` -- audio shifted by ``-15 .. +15``
    frames.  ``mdist`` is the mean over windows per shift; ``offset = 15 -
    argmin(mdist)``, ``LSE-D = min(mdist)``, ``LSE-C = median(mdist) - min(mdist)``.
    The framewise confidence is ``median(mdist) - dists[:, argmin]`` median-filtered
    with kernel 9 (``scipy.signal.medfilt``: zero padding at both ends).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import RateLike
from lipsync.audio.mfcc import mfcc as audio_mfcc
from lipsync.audio.mfcc import mfcc_params
from lipsync.faces.crop import crop_geometry, crop_region, medfilt_zero
from lipsync.models.syncnet import SyncNetContract

if TYPE_CHECKING:
    from lipsync.media.probe import MediaInfo
    from lipsync.models.syncnet import SyncNet

__all__ = [
    "LseScores",
    "calc_pdist",
    "crop_face",
    "lse_from_distances",
    "lse_window_count",
    "medfilt_zero",
    "score_lse",
    "syncnet_crops",
    "syncnet_embeddings",
    "syncnet_mfcc",
]

CONTRACT = SyncNetContract()


# --------------------------------------------------------------------------- audio


def syncnet_mfcc(audio_16k: np.ndarray, *, steps: int | None = None, contract: SyncNetContract = CONTRACT) -> np.ndarray:
    """``(T, 13)`` float32 MFCC of 16 kHz mono audio, as ``python_speech_features.mfcc(pcm16, 16000)``.

    Float audio (-1..1) is put on the 16-bit PCM scale (``round(x * 32768)``,
    clipped); int16 PCM is used as is; other sample types raise ``TypeError``.
    ``steps`` fixes ``T`` (zero padding at the end); by default ``T`` is
    python_speech_features' frame count: :func:`lipsync.audio.mfcc.mfcc` with the
    contract's ``mfcc_*`` numbers.
    """
    return audio_mfcc(_pcm_or_float(audio_16k, "syncnet_mfcc"), mfcc_params(contract), steps=steps)


def _pcm_or_float(audio_16k: np.ndarray, where: str) -> np.ndarray:
    """The audio as given when it is float (-1..1) or int16 PCM; any other sample type is refused."""
    audio = np.asarray(audio_16k)
    if not (np.issubdtype(audio.dtype, np.floating) or audio.dtype == np.int16):
        raise TypeError(
            f"{where}: audio must be float samples in -1..1 or int16 PCM, got {audio.dtype}; convert it "
            f"(e.g. int32 PCM: (x / 2**31).astype(np.float32))"
        )
    return audio


def _audio_segment(audio_16k: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples of ``audio_16k`` from ``start`` (may be negative), zeros outside the array.

    The segment keeps the sample type (float stays float, int16 PCM stays int16), so
    :func:`syncnet_mfcc` scales each correctly."""
    seg = np.zeros(length, dtype=audio_16k.dtype)
    a0, a1 = max(int(start), 0), min(int(start) + length, len(audio_16k))
    if a1 > a0:
        seg[a0 - start : a1 - start] = audio_16k[a0:a1]
    return seg


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class LseScores:
    """SyncNet's verdict on one face track against one audio.

    ``lse_d``: mean embedding distance at the best offset (lower is better);
    ``lse_c``: ``median(mdist) - lse_d`` (higher is better); ``offset``: the
    audio-to-video offset in 25 fps frames, ``max_offset - argmin(mdist)``
    (the reference's sign: positive when the sound that fits frame ``i`` is at
    frame ``i - offset``, i.e. the audio is ahead of the picture); ``mdist``: mean distance per shift, ``-max_offset ..
    +max_offset``; ``framewise_conf``: per window, median-filtered (kernel 9).
    """

    lse_d: float
    lse_c: float
    offset: int
    mdist: tuple[float, ...]
    framewise_conf: tuple[float, ...]

    @property
    def windows(self) -> int:
        return len(self.framewise_conf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lse_d": self.lse_d,
            "lse_c": self.lse_c,
            "offset": self.offset,
            "windows": self.windows,
            "mdist": list(self.mdist),
            "framewise_conf": list(self.framewise_conf),
        }


def lse_from_distances(dists: np.ndarray, *, median_kernel: int = CONTRACT.median_kernel) -> LseScores:
    """LSE of a ``(n_windows, 2 * max_offset + 1)`` distance matrix (:func:`calc_pdist`), as the reference's ``evaluate``.

    ``max_offset`` is read from the width; ties in the minimum go to the first
    (lowest) shift.  ``fdist`` is each window's distance at the *global* best
    shift, ``fconf = median(mdist) - fdist``, median-filtered with ``median_kernel``.
    """
    d = np.asarray(dists, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] < 1 or d.shape[1] % 2 != 1:
        raise ValueError(f"lse_from_distances: expected a (n_windows >= 1, 2 * max_offset + 1) matrix, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("lse_from_distances: distances must be finite")
    max_offset = (d.shape[1] - 1) // 2
    mdist = d.mean(axis=0)
    minidx = int(np.argmin(mdist))
    minval = float(mdist[minidx])
    med = float(np.median(mdist))
    fconf = med - d[:, minidx]
    fconfm = medfilt_zero(fconf, median_kernel)
    return LseScores(
        lse_d=minval,
        lse_c=med - minval,
        offset=max_offset - minidx,
        mdist=tuple(float(v) for v in mdist),
        framewise_conf=tuple(float(v) for v in fconfm),
    )


def calc_pdist(lip_emb: Any, aud_emb: Any, vshift: int = CONTRACT.max_offset, *, chunk: int = 256) -> np.ndarray:
    """``(N, 2 * vshift + 1)`` float32 distances between lip window ``i`` and audio window ``i + k - vshift``.

    As the reference's ``calc_pdist``: the audio embeddings are zero-padded by
    ``vshift`` rows on both ends and row ``i`` is
    ``pairwise_distance(lip[i], aud_padded[i : i + 2 * vshift + 1])`` (p = 2, eps
    1e-6 added to the difference).  Takes numpy arrays or torch tensors ``(N, D)``.
    """
    import torch
    import torch.nn.functional as F

    lip = torch.as_tensor(lip_emb).detach().to("cpu", torch.float32)
    aud = torch.as_tensor(aud_emb).detach().to("cpu", torch.float32)
    if lip.ndim != 2 or lip.shape != aud.shape:
        raise ValueError(f"calc_pdist: lip and audio embeddings must both be (N, D), got {tuple(lip.shape)} and {tuple(aud.shape)}")
    if vshift < 0:
        raise ValueError(f"calc_pdist: vshift must be >= 0, got {vshift}")
    n, width = lip.shape[0], 2 * vshift + 1
    padded = F.pad(aud, (0, 0, vshift, vshift))
    shifts = torch.arange(width)
    out = torch.empty((n, width), dtype=torch.float32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        idx = torch.arange(a, b)[:, None] + shifts[None, :]
        out[a:b] = F.pairwise_distance(lip[a:b, None, :].expand(-1, width, -1), padded[idx])
    return out.numpy()


# --------------------------------------------------------------------------- crops


def crop_face(frame: np.ndarray, x: float, y: float, s: float, contract: SyncNetContract = CONTRACT) -> np.ndarray:
    """syncnet_python's ``crop_video`` crop of a BGR ``frame``: ``(224, 224, 3)`` uint8 around centre ``(x, y)``, half-size ``s``.

    Equivalent to padding the frame by ``bsi = int(s * (1 + 2 * cs))`` pixels of
    ``pad_value`` and slicing rows ``[int(y + bsi - s), int(y + bsi + s (1 + 2 cs)))``
    and columns ``[int(x + bsi - s (1 + cs)), int(x + bsi + s (1 + cs)))``, without
    building the padded frame (:func:`lipsync.faces.crop.crop_region`).  Ends past
    the padded frame are clipped as numpy slicing clips them; a start before it (a
    centre far outside the picture) is clamped to 0 instead of wrapping around.
    """
    import cv2

    c = contract
    size = c.crop_size
    region = crop_region(frame, x, y, s, c.crop_scale, c.pad_value)
    if region is None:
        return np.full((size, size) + frame.shape[2:], c.pad_value, dtype=np.uint8)
    return cv2.resize(region, (size, size))  # bilinear, cv2's default as in the reference


def syncnet_crops(
    video: str | os.PathLike[str],
    track: FaceTrack,
    *,
    info: "MediaInfo | None" = None,
    contract: SyncNetContract = CONTRACT,
) -> np.ndarray:
    """``(n, 224, 224, 3)`` uint8 BGR crops of every frame of ``track`` in ``video`` (see the module docstring).

    Only the track's frames are decoded; only the crops are kept.
    """
    from lipsync.media.frames import FrameReader

    n = track.frames.duration
    out = np.empty((n, contract.crop_size, contract.crop_size, 3), dtype=np.uint8)
    if n == 0:
        return out
    geom = crop_geometry(track, contract.box_median_kernel)
    got = 0
    with FrameReader(video, frames=track.frames, pix_fmt="bgr24", info=info) as reader:
        for j, frame in enumerate(reader):
            x, y, s = geom[j]
            out[j] = crop_face(frame, float(x), float(y), float(s), contract)
            got += 1
    if got != n:
        raise ValueError(f"{video}: read {got} of the {n} frames of track {track.id}")
    return out


# --------------------------------------------------------------------------- scoring


def syncnet_embeddings(
    crops: np.ndarray,
    ticks: np.ndarray,
    mfcc: np.ndarray,
    windows: int,
    model: "SyncNet",
    *,
    batch_size: int = 20,
) -> tuple[Any, Any]:
    """Lip and audio embeddings ``(windows, 1024)`` (torch, CPU) of windows ``0 .. windows-1``.

    Window ``i``: crops ``ticks[i : i + 5]`` as ``(3, 5, 224, 224)`` float BGR
    0..255, and ``mfcc[4i : 4i + 20]`` transposed to ``(1, 13, 20)``.
    """
    import torch

    c = model.contract
    fw, step, span = c.frames_per_window, c.mfcc_steps_per_frame, c.mfcc_window_steps
    device = next(model.parameters()).device
    cc = np.ascontiguousarray(np.asarray(mfcc, dtype=np.float32).T)  # (13, T)
    lips, auds = [], []
    with torch.inference_mode():
        for a in range(0, windows, batch_size):
            idx = range(a, min(a + batch_size, windows))
            im = np.stack([crops[ticks[i : i + fw]] for i in idx])  # (B, 5, H, W, 3) uint8
            im_t = torch.from_numpy(im).to(device).permute(0, 4, 1, 2, 3).float()
            lips.append(model.forward_lip(im_t).float().cpu())
            au = np.stack([cc[:, step * i : step * i + span] for i in idx])[:, None]  # (B, 1, 13, 20)
            auds.append(model.forward_aud(torch.from_numpy(au).to(device)).float().cpu())
    return torch.cat(lips), torch.cat(auds)


WINDOW_RULES = ("syncnet_python", "all")


def lse_window_count(ticks: int, audio_samples: int, rule: str = "syncnet_python", contract: SyncNetContract = CONTRACT) -> int:
    """Number of 5-tick windows scored for ``ticks`` 25 fps frames and ``audio_samples`` samples of audio (may be < 1).

    ``"syncnet_python"``: ``SyncNetInstance.evaluate``'s ``min(len(images),
    floor(len(audio) / 640)) - 5`` (``640 = sample_rate / fps``); ``"all"``:
    ``ticks - 4``, every complete window, whatever the audio length.
    """
    c = contract
    if rule == "syncnet_python":
        per_frame = c.sample_rate // c.fps
        return min(int(ticks), max(0, int(audio_samples)) // per_frame) - c.frames_per_window
    if rule == "all":
        return int(ticks) - c.frames_per_window + 1
    raise ValueError(f"window_rule must be one of {WINDOW_RULES}, got {rule!r}")


def score_lse(
    crops: np.ndarray,
    audio_16k: np.ndarray,
    audio_start_sample: int,
    model: "SyncNet",
    *,
    fps: RateLike = 25,
    batch_size: int = 20,
    window_rule: str = "syncnet_python",
) -> LseScores:
    """LSE of a track's :func:`syncnet_crops` against 16 kHz audio whose sample ``audio_start_sample`` is the track's start.

    ``crops`` are at ``fps`` (mapped to 25 fps by time); audio before the array is
    silence.  ``audio_16k`` is float (-1..1) or int16 PCM (the same numbers
    either way); other sample types raise ``TypeError``.  Windows
    (:func:`lse_window_count`): ``window_rule="syncnet_python"`` (default) scores
    what the reference scores, ``min(ticks, floor(audio / 640)) - 5``;
    ``"all"`` every complete 5-tick window.  Raises ``ValueError`` when that
    leaves no window (too few frames, 25 fps ticks or audio).
    """
    from lipsync.speakers.asd import tick_frames

    c = model.contract
    faces = np.asarray(crops)
    if faces.ndim != 4 or faces.shape[1:] != (c.crop_size, c.crop_size, 3):
        raise ValueError(f"score_lse: expected (n, {c.crop_size}, {c.crop_size}, 3) BGR crops, got shape {faces.shape}")
    if faces.dtype != np.uint8:
        raise ValueError(f"score_lse: expected uint8 crops, got {faces.dtype}")
    audio = _pcm_or_float(audio_16k, "score_lse")
    if audio.ndim != 1:
        raise ValueError(f"score_lse: expected mono 16 kHz audio, got shape {audio.shape}")
    n = faces.shape[0]
    ticks = tick_frames(n, fps, c.fps)
    windows = lse_window_count(len(ticks), len(audio) - int(audio_start_sample), window_rule, c)
    if n < c.frames_per_window or windows < 1:
        need = c.frames_per_window + (1 if window_rule == "syncnet_python" else 0)
        raise ValueError(
            f"score_lse: {n} frames at {fps} fps ({len(ticks)} ticks at {c.fps} fps) with "
            f"{max(0, len(audio) - int(audio_start_sample))} audio samples are too few: SyncNet needs {need} ticks "
            f"and as many 25 fps frames of audio ({window_rule!r} window rule)"
        )
    steps = c.mfcc_steps_per_frame * (windows - 1) + c.mfcc_window_steps
    mp = mfcc_params(c)
    seg = _audio_segment(audio, int(audio_start_sample), (steps - 1) * mp.samples_per_step + mp.window_samples)
    mfcc = syncnet_mfcc(seg, steps=steps, contract=c)
    lip, aud = syncnet_embeddings(faces, ticks, mfcc, windows, model, batch_size=batch_size)
    return lse_from_distances(calc_pdist(lip, aud, c.max_offset), median_kernel=c.median_kernel)

