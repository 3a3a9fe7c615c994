"""Active speaker detection: which face track is speaking, frame by frame, with Light-ASD.

For every frame of a :class:`~dubcore.records.FaceTrack` the network
(:mod:`lipsync.models.light_asd`) gives a score, the class-1 logit of its
audio-visual head: positive = speaking, as the reference's ``Columbia_test.py``
reports it.  This module prepares its inputs exactly as that script does and
turns scores into speaking ranges.

Face crops (:func:`face_crop`, reference ``crop_video`` + ``evaluate_network``)
    Per track: box half-size ``s = max(w, h) / 2`` and centre ``(x, y)`` of every
    frame, each median-filtered over the track (as ``scipy.signal.medfilt``,
    kernel 13, zero-padded at both ends as in the reference; ``min(13, 2n - 1)``
    for a track of ``n < 7`` frames so the zero padding cannot win the median).
    The frame is padded by ``int(s * 1.8)`` pixels of value 110 and the square rows
    ``[y - s, y + 1.8 s)``, columns ``[x - 1.4 s, x + 1.4 s)`` is cut (crop scale
    0.40), resized to 224 x 224 (bilinear), turned gray and its centre 112 x 112
    kept: the lower face, mouth and chin.  (The reference also writes the 224 px
    crop to an XVID file and reads it back; that lossy round trip is not
    reproduced.)  Frames are streamed from the shot (:class:`FrameReader` over the
    tracks' frames); only the 112 x 112 crops (12.5 KB a frame) are kept.

Audio (:func:`lipsync.models.light_asd.mfcc`)
    13 MFCC at 100 Hz from the 16 kHz audio, ``python_speech_features`` with the
    reference's arguments, on the 16-bit PCM scale.  The track's audio starts at
    the sample where its first frame starts, ``round(t0 * 16000)`` with ``t0`` the
    exact time of that frame relative to ``audio_start_frame``; model frame ``j``
    (at 25 fps) <-> MFCC steps ``[4j, 4j + 4)``, i.e. samples ``[640 j, 640 j +
    880)`` from there.  Audio before the array or past its end is silence (zeros).
    Unlike the reference, the track's last frame is scored too (the reference cuts
    the audio at the track's end, which leaves one MFCC step short, and drops it).

Other frame rates (mapping by time)
    The model runs on a 25 fps timeline laid over the track: ``m =
    max(1, round(n * 25 / fps))`` ticks, tick ``j`` showing the source frame on
    screen at its centre time, ``floor((j + 0.5) * fps / 25)`` (nearly what the
    reference's ``ffmpeg -r 25`` conversion does), with audio aligned to the ticks
    as above.
    Each source frame then takes the tick scores linearly interpolated at its own
    centre time ``(k + 0.5) / fps`` (held constant past the first/last tick).  At
    25 fps this is the identity: tick ``j`` is frame ``j``.

Multi-duration averaging (reference ``evaluate_network``)
    The track is cut into consecutive windows of ``d`` seconds (``d * 25`` ticks,
    the last one shorter) for each ``d`` in ``durations`` (1..6 s: the reference's
    ``{1,1,1,2,2,2,3,3,4,5,6}`` is a Python *set*, so each duration once), every
    window is scored on its own, and the per-frame scores are averaged over the
    durations (not rounded to 0.1 as the reference does).  With ``frontend="track"``
    (default) the visual and audio encoders run once over the whole track (in
    chunks with enough overlap to be identical to one pass) and only the GRU back
    end runs per window: about 6x cheaper on CPU, and it differs from the
    reference only near window edges, where the reference's encoders see zero
    padding (on the two-face clip: mean |difference| 0.09, at most 0.4 over 150
    frames; the test suite checks it).  ``frontend="window"`` runs the encoders
    per window, exactly as the reference.

Speaking ranges (:func:`speaking_ranges`)
    Scores are median-filtered over ``median_seconds`` (0.2 s: 5 frames at 25 fps,
    always odd, edges repeated); a frame is speaking where the filtered score is
    above ``threshold`` (0.0); runs shorter than ``min_speech_seconds`` (0.2 s)
    are dropped.  The *speaker* of a frame (:meth:`AsdResult.speaker_at`) is, among
    the tracks marked speaking there, the one with the highest filtered score;
    none when no track is marked speaking.  Where the caller knows a voice is
    heard (``speech=True``) it is the visible track with the highest filtered
    score, whatever its sign.

asd.json (``dub-film/asd@1``, :meth:`AsdResult.write`): source, fps, frame count,
model and parameters, and per track its frames, per-frame scores (rounded to
1e-4), filtered scores and speaking frame ranges (half-open).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.schema import SchemaError, read_json, write_json
from dubcore.timebase import FrameRange, RateLike, format_rate, frame_to_sample, parse_rate

if TYPE_CHECKING:  # torch is imported only by the functions that run the model
    from lipsync.media.probe import MediaInfo
    from lipsync.models.light_asd import LightASD, LightASDContract

log = logging.getLogger(__name__)

__all__ = [
    "AsdParams",
    "AsdResult",
    "TrackCrops",
    "TrackScores",
    "audio_16k_memmap",
    "crop_tracks",
    "encode_faces",
    "face_crop",
    "read_asd",
    "score_crops",
    "score_track",
    "score_tracks",
    "smooth_scores",
    "speaking_ranges",
]

KIND = "asd"
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class AsdParams:
    """How scores are computed and turned into speaking ranges (see the module docstring)."""

    durations: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    frontend: Literal["track", "window"] = "track"
    chunk_frames: int = 100  # encoder chunk (model frames) with frontend="track"
    threshold: float = 0.0
    median_seconds: float = 0.2
    min_speech_seconds: float = 0.2

    def __post_init__(self) -> None:
        if not self.durations or any(int(d) <= 0 for d in self.durations):
            raise ValueError(f"AsdParams.durations must be positive seconds, got {self.durations}")
        if self.frontend not in ("track", "window"):
            raise ValueError(f"AsdParams.frontend must be 'track' or 'window', got {self.frontend!r}")
        if self.chunk_frames < 8:
            raise ValueError(f"AsdParams.chunk_frames must be >= 8, got {self.chunk_frames}")

    def median_frames(self, fps: RateLike) -> int:
        """Median filter length in frames at ``fps``: odd, at least 1."""
        k = max(1, int(round(self.median_seconds * float(parse_rate(fps)))))
        return k if k % 2 else k + 1

    def min_speech_frames(self, fps: RateLike) -> int:
        return max(1, int(math.ceil(self.min_speech_seconds * float(parse_rate(fps)) - 1e-9)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["durations"] = list(self.durations)
        return d


def _contract(model: "LightASD | None") -> "LightASDContract":
    from lipsync.models.light_asd import LightASDContract

    return model.contract if model is not None else LightASDContract()


# --------------------------------------------------------------------------- face crops


def _medfilt(values: np.ndarray, kernel: int) -> np.ndarray:
    """``scipy.signal.medfilt`` (zero padding at both ends), kernel capped at ``2n - 1`` for ``n`` values."""
    x = np.asarray(values, dtype=np.float64)
    k = min(int(kernel), 2 * len(x) - 1)
    if k <= 1:
        return x.copy()
    half = k // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)


def crop_geometry(track: FaceTrack, contract: "LightASDContract | None" = None) -> np.ndarray:
    """``(n, 3)`` rows ``(x, y, s)``: median-filtered box centre and half-size of every frame of ``track``."""
    c = contract or _contract(None)
    boxes = np.array([o.box for o in track.observations], dtype=np.float64).reshape(-1, 4)
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    k = c.box_median_kernel
    return np.stack([_medfilt(x, k), _medfilt(y, k), _medfilt(s, k)], axis=1)


def face_crop(frame: np.ndarray, x: float, y: float, s: float, contract: "LightASDContract | None" = None) -> np.ndarray:
    """The reference's 112 x 112 gray face crop of a BGR (or gray) ``frame`` around centre ``(x, y)``, half-size ``s``.

    Equivalent to padding the frame by ``bsi = int(s * (1 + 2 * cs))`` pixels of
    110 on every side and slicing it as ``Columbia_test.crop_video`` does, without
    building the padded frame.  Slice ends past the padded frame are clipped as
    numpy clips them; a start before it (a centre far outside the picture) is
    clamped to 0 instead of wrapping around.
    """
    import cv2

    c = contract or _contract(None)
    cs = c.crop_scale
    bs = float(s)
    bsi = int(bs * (1 + 2 * cs))
    h, w = frame.shape[:2]
    my, mx = y + bsi, x + bsi
    ph, pw = h + 2 * bsi, w + 2 * bsi
    r0, r1 = int(my - bs), int(my + bs * (1 + 2 * cs))
    c0, c1 = int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs))
    r0, r1 = min(max(r0, 0), ph), min(max(r1, 0), ph)
    c0, c1 = min(max(c0, 0), pw), min(max(c1, 0), pw)
    size = c.face_size
    if r1 <= r0 or c1 <= c0:
        return np.full((size, size), c.crop_pad_value, dtype=np.uint8)
    shape = (r1 - r0, c1 - c0) + frame.shape[2:]
    region = np.full(shape, c.crop_pad_value, dtype=np.uint8)
    # Rows/cols of the padded frame -> of the frame.
    fr0, fr1 = max(r0 - bsi, 0), min(r1 - bsi, h)
    fc0, fc1 = max(c0 - bsi, 0), min(c1 - bsi, w)
    if fr1 > fr0 and fc1 > fc0:
        region[fr0 + bsi - r0 : fr1 + bsi - r0, fc0 + bsi - c0 : fc1 + bsi - c0] = frame[fr0:fr1, fc0:fc1]
    big = c.crop_resize
    face = cv2.resize(region, (big, big))  # bilinear, as cv2's default in the reference
    if face.ndim == 3:
        face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    lo = big // 2 - size // 2
    return np.ascontiguousarray(face[lo : lo + size, lo : lo + size])


@dataclass(frozen=True)
class TrackCrops:
    """The model's view of one track: gray crops on the 25 fps timeline of the track.

    ``faces[j]`` is the crop of source frame ``track.frames.start + ticks[j]``;
    ``fps`` is the source rate.  At 25 fps ``ticks`` is ``0..n-1``.
    """

    track: FaceTrack
    fps: Fraction
    faces: np.ndarray  # (m, 112, 112) uint8
    ticks: np.ndarray  # (m,) int: source frame offset shown at each tick

    @property
    def model_frames(self) -> int:
        return int(self.faces.shape[0])


def tick_frames(n: int, fps: RateLike, model_fps: int = 25) -> np.ndarray:
    """Source frame offsets shown at each tick of the ``model_fps`` timeline over ``n`` frames at ``fps``."""
    rate = parse_rate(fps)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if rate == model_fps:
        return np.arange(n, dtype=np.int64)
    m = max(1, int(math.floor(Fraction(n * model_fps) / rate + Fraction(1, 2))))
    ticks = [min(n - 1, math.floor((Fraction(2 * j + 1, 2) * rate) / model_fps)) for j in range(m)]
    return np.asarray(ticks, dtype=np.int64)


def crop_tracks(
    video: str | os.PathLike[str],
    tracks: Sequence[FaceTrack],
    *,
    fps: RateLike | None = None,
    info: "MediaInfo | None" = None,
    contract: "LightASDContract | None" = None,
    progress: Progress | None = None,
) -> dict[str, TrackCrops]:
    """Crops of every track, decoding each group of overlapping tracks (a shot) once.

    Tracks whose frame ranges overlap or touch are read together with one
    :class:`FrameReader` over their union; only the 112 px crops are kept.
    """
    from lipsync.media.frames import FrameReader
    from lipsync.media.probe import probe

    c = contract or _contract(None)
    info = info or probe(video)
    rate = parse_rate(fps) if fps is not None else info.require_video().fps
    # Group tracks into runs of overlapping frame ranges.
    order = sorted(tracks, key=lambda t: (t.frames.start, t.frames.end))
    groups: list[tuple[FrameRange, list[FaceTrack]]] = []
    for t in order:
        if t.frames.duration == 0:
            continue
        if groups and t.frames.start <= groups[-1][0].end:
            rng, members = groups[-1]
            groups[-1] = (FrameRange(rng.start, max(rng.end, t.frames.end)), members + [t])
        else:
            groups.append((t.frames, [t]))
    total = sum(g.duration for g, _ in groups)
    done = 0
    out: dict[str, TrackCrops] = {}
    for rng, members in groups:
        plans = []
        for t in members:
            ticks = tick_frames(t.frames.duration, rate, c.fps)
            wanted: dict[int, list[int]] = {}
            for j, k in enumerate(ticks.tolist()):
                wanted.setdefault(t.frames.start + k, []).append(j)
            plans.append((t, ticks, wanted, crop_geometry(t, c), np.empty((len(ticks), c.face_size, c.face_size), np.uint8)))
        with FrameReader(video, frames=rng, pix_fmt="bgr24", info=info) as reader:
            for index, frame in zip(rng, reader):
                for t, _ticks, wanted, geom, faces in plans:
                    js = wanted.get(index)
                    if not js:
                        continue
                    x, y, s = geom[index - t.frames.start]
                    crop = face_crop(frame, x, y, s, c)
                    for j in js:
                        faces[j] = crop
                done += 1
                if progress is not None:
                    progress(done, total)
        for t, ticks, _wanted, _geom, faces in plans:
            out[t.id] = TrackCrops(track=t, fps=rate, faces=faces, ticks=ticks)
    return out


# --------------------------------------------------------------------------- audio


def _track_audio_start(track: FaceTrack, audio_start_frame: int, fps: Fraction, sample_rate: int) -> int:
    """Sample of the 16 kHz array at which the track's first frame starts (may be negative)."""
    offset = track.frames.start - int(audio_start_frame)
    sign = -1 if offset < 0 else 1
    return sign * frame_to_sample(abs(offset), fps, sample_rate, "round")


def track_mfcc(
    audio_16k: np.ndarray, start_sample: int, model_frames: int, contract: "LightASDContract | None" = None
) -> np.ndarray:
    """``(4 * model_frames, 13)`` MFCC of the audio from ``start_sample`` (silence outside the array)."""
    from lipsync.models.light_asd import mfcc

    c = contract or _contract(None)
    steps = c.audio_steps_per_frame * model_frames
    need = (steps - 1) * c.samples_per_step + c.window_samples
    seg = np.zeros(need, dtype=np.float32)
    a0, a1 = max(start_sample, 0), min(start_sample + need, len(audio_16k))
    if a1 > a0:
        seg[a0 - start_sample : a1 - start_sample] = np.asarray(audio_16k[a0:a1], dtype=np.float32)
    return mfcc(seg, c, steps=steps)


def audio_16k_memmap(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, stream_index: int | None = None) -> np.ndarray:
    """Decode the audio of ``src`` to raw 16 kHz mono float32 at ``dst`` and map it read-only.

    For films: the scorer reads only each track's samples, so the whole
    soundtrack never has to sit in memory.
    """
    from dubcore.schema import atomic_path
    from lipsync.media.audio import audio_stream
    from lipsync.media.errors import MediaError
    from lipsync.media.probe import media_arg, probe, require_tool

    info = probe(src)
    stream = audio_stream(info, stream_index)
    with atomic_path(dst, suffix=".f32") as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(src)]
        cmd += ["-map", f"0:{stream.index}", "-vn", "-sn", "-dn", "-ac", "1"]
        cmd += ["-af", "aresample=16000:resampler=soxr:precision=28", "-ar", "16000", "-c:a", "pcm_f32le", "-f", "f32le", media_arg(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MediaError(f"{src}: audio decode failed: {proc.stderr.strip()}")
    if os.path.getsize(dst) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(dst, dtype="<f4", mode="r")


# --------------------------------------------------------------------------- scoring


def _encode_chunked(fn: Callable[[int, int], Any], m: int, chunk: int, margin: int) -> Any:
    """Run an encoder over model frames ``[0, m)`` in chunks with ``margin`` frames of context each side.

    ``fn(a, b)`` encodes frames ``[a, b)`` and returns ``(1, b - a, 128)``; the
    outputs kept from each chunk are at least ``margin`` frames from its cut
    edges, so the result equals one pass over all frames (the encoders' temporal
    receptive field is under ``margin`` frames).
    """
    import torch

    if m <= chunk + 2 * margin:
        return fn(0, m)
    parts = []
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        lo, hi = max(0, a - margin), min(m, b + margin)
        parts.append(fn(lo, hi)[:, a - lo : a - lo + (b - a)])
    return torch.cat(parts, dim=1)


#: Temporal receptive-field radius (model frames) of the encoders, with room to spare
#: (visual: three blocks of 5-frame convs = 6; audio: under 5).
_MARGIN = 8


def encode_faces(crops: TrackCrops, model: "LightASD", params: AsdParams = AsdParams()) -> Any:
    """Visual embeddings ``(1, m, 128)`` of a track's crops (the costly part), to reuse with several audios.

    Pass the result as ``visual_embed`` to :func:`score_crops` (``frontend="track"``
    only): scoring one face against several candidate voices then costs one
    visual pass.
    """
    import torch

    device = next(model.parameters()).device
    faces_t = torch.from_numpy(crops.faces).to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        return _encode_chunked(
            lambda a, b: model.visual_frontend(faces_t[a:b].unsqueeze(0)), crops.model_frames, params.chunk_frames, _MARGIN
        )


def score_crops(
    crops: TrackCrops,
    audio_16k: np.ndarray,
    audio_start_frame: int,
    model: "LightASD",
    params: AsdParams = AsdParams(),
    *,
    visual_embed: Any = None,
) -> np.ndarray:
    """Per-frame scores (float32, one per source frame of the track) of prepared crops against ``audio_16k``.

    ``visual_embed``: the track's :func:`encode_faces` output, to skip the visual
    pass (``frontend="track"`` only).
    """
    import torch

    c = model.contract
    m = crops.model_frames
    n = crops.track.frames.duration
    if m == 0:
        return np.zeros(n, dtype=np.float32)
    if visual_embed is not None and (params.frontend != "track" or tuple(visual_embed.shape[:2]) != (1, m)):
        raise ValueError(f"visual_embed of shape {tuple(visual_embed.shape)} does not fit {m} model frames with frontend={params.frontend!r}")
    start = _track_audio_start(crops.track, audio_start_frame, crops.fps, c.sample_rate)
    feats = track_mfcc(audio_16k, start, m, c)
    spf = c.audio_steps_per_frame
    device = next(model.parameters()).device
    mfcc_t = torch.from_numpy(feats).to(device)
    total = torch.zeros(m, dtype=torch.float32, device=device)
    with torch.inference_mode():
        if params.frontend == "track":
            v = visual_embed if visual_embed is not None else encode_faces(crops, model, params)
            au = _encode_chunked(
                lambda a, b: model.audio_frontend(mfcc_t[a * spf : b * spf].unsqueeze(0)), m, params.chunk_frames, _MARGIN
            )
            for d in params.durations:
                w = int(d) * c.fps
                full = (m // w) * w
                if full:  # all whole windows as one batch of (m // w, w, 128)
                    total[:full] += model.backend(au[:, :full].reshape(-1, w, au.shape[-1]), v[:, :full].reshape(-1, w, v.shape[-1])).reshape(-1)
                if full < m:
                    total[full:] += model.backend(au[:, full:], v[:, full:]).reshape(-1)
        else:
            faces_t = torch.from_numpy(crops.faces).to(device=device, dtype=torch.float32)
            for d in params.durations:
                w = int(d) * c.fps
                group = max(1, params.chunk_frames // w) * w  # whole windows per call, bounded memory
                for a in range(0, m, group):
                    b = min(a + group, m)
                    full = a + ((b - a) // w) * w
                    if full > a:
                        k = (full - a) // w
                        total[a:full] += model(
                            mfcc_t[a * spf : full * spf].reshape(k, w * spf, -1), faces_t[a:full].reshape(k, w, *faces_t.shape[1:])
                        ).reshape(-1)
                    if full < b:
                        total[full:b] += model(mfcc_t[full * spf : b * spf].unsqueeze(0), faces_t[full:b].unsqueeze(0)).reshape(-1)
    tick_scores = (total / len(params.durations)).cpu().numpy().astype(np.float64)
    if m == n and np.array_equal(crops.ticks, np.arange(n)):
        return tick_scores.astype(np.float32)
    # Map by time: tick j covers [j/25, (j+1)/25); source frame k covers [k/fps, (k+1)/fps).
    tick_centres = (np.arange(m) + 0.5) / c.fps
    frame_centres = (np.arange(n) + 0.5) / float(crops.fps)
    return np.interp(frame_centres, tick_centres, tick_scores).astype(np.float32)


def score_track(
    video: str | os.PathLike[str],
    track: FaceTrack,
    audio_16k: np.ndarray,
    audio_start_frame: int,
    model: "LightASD",
    *,
    fps: RateLike | None = None,
    info: "MediaInfo | None" = None,
    params: AsdParams = AsdParams(),
) -> np.ndarray:
    """Speaking score of every frame of ``track`` (float32, ``track.frames.duration`` values; > 0 = speaking).

    ``audio_16k`` is mono 16 kHz audio (float in -1..1) whose sample 0 is the
    start of video frame ``audio_start_frame`` (0 for the film's own soundtrack).
    ``fps`` is the video's exact rate (default: probed).
    """
    crops = crop_tracks(video, [track], fps=fps, info=info, contract=model.contract)[track.id]
    return score_crops(crops, audio_16k, audio_start_frame, model, params)


def score_tracks(
    video: str | os.PathLike[str],
    tracks: Iterable[FaceTrack],
    audio_16k: np.ndarray,
    audio_start_frame: int,
    model: "LightASD",
    *,
    fps: RateLike | None = None,
    info: "MediaInfo | None" = None,
    params: AsdParams = AsdParams(),
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """:func:`score_track` for many tracks, decoding each shot once; ``{track_id: scores}`` in input order."""
    tracks = list(tracks)
    crops = crop_tracks(video, tracks, fps=fps, info=info, contract=model.contract, progress=progress)
    return {t.id: score_crops(crops[t.id], audio_16k, audio_start_frame, model, params) for t in tracks if t.id in crops}


# --------------------------------------------------------------------------- decisions


def smooth_scores(scores: np.ndarray, kernel: int) -> np.ndarray:
    """Running median of ``kernel`` (odd) frames, edges repeated."""
    from scipy.ndimage import median_filter

    x = np.asarray(scores, dtype=np.float64)
    if kernel <= 1 or len(x) == 0:
        return x.copy()
    return median_filter(x, size=int(kernel), mode="nearest")


def speaking_ranges(scores: np.ndarray, first_frame: int, fps: RateLike, params: AsdParams = AsdParams()) -> tuple[FrameRange, ...]:
    """Half-open frame ranges where the median-filtered score is above the threshold for at least the minimum duration."""
    smoothed = smooth_scores(scores, params.median_frames(fps))
    on = smoothed > params.threshold
    min_len = params.min_speech_frames(fps)
    ranges = []
    i, n = 0, len(on)
    while i < n:
        if not on[i]:
            i += 1
            continue
        j = i
        while j < n and on[j]:
            j += 1
        if j - i >= min_len:
            ranges.append(FrameRange(first_frame + i, first_frame + j))
        i = j
    return tuple(ranges)


@dataclass(frozen=True)
class TrackScores:
    """Scores of one track: raw, median-filtered, and the speaking ranges derived from them."""

    track_id: str
    shot_id: str
    frames: FrameRange
    scores: tuple[float, ...]
    smoothed: tuple[float, ...]
    speaking: tuple[FrameRange, ...]

    def __post_init__(self) -> None:
        if len(self.scores) != self.frames.duration or len(self.smoothed) != self.frames.duration:
            raise ValueError(f"track {self.track_id}: {len(self.scores)} scores for {self.frames.duration} frames")

    def score_at(self, frame: int, smoothed: bool = True) -> float | None:
        if frame not in self.frames:
            return None
        return (self.smoothed if smoothed else self.scores)[frame - self.frames.start]

    def is_speaking(self, frame: int) -> bool:
        return any(frame in r for r in self.speaking)

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "shot_id": self.shot_id,
            "frames": self.frames.to_list(),
            "scores": [round(float(s), 4) for s in self.scores],
            "smoothed": [round(float(s), 4) for s in self.smoothed],
            "speaking": [r.to_list() for r in self.speaking],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackScores":
        return cls(
            track_id=str(data["track_id"]),
            shot_id=str(data["shot_id"]),
            frames=FrameRange.from_list(data["frames"]),
            scores=tuple(float(s) for s in data["scores"]),
            smoothed=tuple(float(s) for s in data["smoothed"]),
            speaking=tuple(FrameRange.from_list(r) for r in data["speaking"]),
        )


@dataclass(frozen=True)
class AsdResult:
    """Active-speaker scores of a film's face tracks; written as ``dub-film/asd@1``."""

    source: str
    fps: Fraction
    frame_count: int
    tracks: tuple[TrackScores, ...]
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls,
        source: str,
        fps: RateLike,
        frame_count: int,
        tracks: Sequence[FaceTrack],
        scores: Mapping[str, np.ndarray],
        params: AsdParams = AsdParams(),
        model: Mapping[str, Any] | None = None,
    ) -> "AsdResult":
        rate = parse_rate(fps)
        kernel = params.median_frames(rate)
        items = []
        for t in tracks:
            if t.id not in scores:
                continue
            s = np.asarray(scores[t.id], dtype=np.float64)
            items.append(
                TrackScores(
                    track_id=t.id,
                    shot_id=t.shot_id,
                    frames=t.frames,
                    scores=tuple(float(v) for v in s),
                    smoothed=tuple(float(v) for v in smooth_scores(s, kernel)),
                    speaking=speaking_ranges(s, t.frames.start, rate, params),
                )
            )
        return cls(source=str(source), fps=rate, frame_count=int(frame_count), tracks=tuple(items),
                   params=params.to_dict(), model=dict(model or {}))

    def track(self, track_id: str) -> TrackScores:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise KeyError(f"no track {track_id!r} in the ASD result of {self.source}")

    def speaker_at(self, frame: int, speech: bool | None = None) -> str | None:
        """The track speaking at ``frame``, or None.

        * ``speech=None`` (nothing known about the audio): among the tracks marked
          speaking at ``frame`` (:attr:`TrackScores.speaking`), the one with the
          highest filtered score; None when no track is marked speaking.
        * ``speech=True`` (the caller knows a voice is heard at ``frame``, e.g.
          from diarization or a stem's voice activity, and that it belongs on
          screen): the visible track with the highest filtered score, whatever its
          sign.  The ranking of faces stays right where the absolute score dips
          below the threshold, e.g. in the quiet tail of a word.  Whether a voice
          belongs on screen at all is the matcher's call
          (:mod:`lipsync.speakers.match`), not this rule's.
        * ``speech=False``: None.
        """
        if speech is False:
            return None
        best, best_score = None, -math.inf
        for t in self.tracks:
            if speech or t.is_speaking(frame):
                s = t.score_at(frame)
                if s is not None and s > best_score:
                    best, best_score = t.track_id, s
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fps": format_rate(self.fps),
            "frame_count": self.frame_count,
            "model": self.model,
            "params": self.params,
            "tracks": [t.to_dict() for t in self.tracks],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write asd.json atomically."""
        return write_json(path, KIND, self.to_dict())


def read_asd(path: str | os.PathLike[str]) -> AsdResult:
    """Read asd.json (:class:`~dubcore.schema.SchemaError` naming the file when it is not one)."""
    data = read_json(path, KIND)
    try:
        return AsdResult(
            source=str(data["source"]),
            fps=parse_rate(data["fps"]),
            frame_count=int(data["frame_count"]),
            tracks=tuple(TrackScores.from_dict(t) for t in data["tracks"]),
            params=dict(data.get("params") or {}),
            model=dict(data.get("model") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{path}: invalid asd file ({type(exc).__name__}: {exc})") from exc
