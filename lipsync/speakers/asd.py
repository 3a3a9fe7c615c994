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

Audio (:func:`track_mfcc`, :func:`lipsync.models.light_asd.mfcc`)
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

Where the code lives: crops and scoring here; parameters, speaking ranges and
asd.json in :mod:`lipsync.speakers.asd_result`; the audio (decode, per-track
MFCC) in :mod:`lipsync.speakers.asd_audio`; the crop cut itself, shared with
SyncNet's QC, in :mod:`lipsync.faces.crop`.  Every public name is importable
from this module.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange, RateLike, parse_rate
from lipsync.faces.crop import crop_geometry as _crop_geometry
from lipsync.faces.crop import crop_region

from .asd_audio import audio_16k_memmap, track_mfcc
from .asd_audio import track_audio_start as _track_audio_start
from .asd_result import AsdParams, AsdResult, TrackScores, read_asd, smooth_scores, speaking_ranges

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

Progress = Callable[[int, int], None]


def _contract(model: "LightASD | None") -> "LightASDContract":
    from lipsync.models.light_asd import LightASDContract

    return model.contract if model is not None else LightASDContract()


# --------------------------------------------------------------------------- face crops


def crop_geometry(track: FaceTrack, contract: "LightASDContract | None" = None) -> np.ndarray:
    """``(n, 3)`` rows ``(x, y, s)``: median-filtered box centre and half-size of every frame of ``track``
    (:func:`lipsync.faces.crop.crop_geometry` with the contract's ``box_median_kernel``)."""
    c = contract or _contract(None)
    return _crop_geometry(track, c.box_median_kernel)


def face_crop(frame: np.ndarray, x: float, y: float, s: float, contract: "LightASDContract | None" = None) -> np.ndarray:
    """The reference's 112 x 112 gray face crop of a BGR (or gray) ``frame`` around centre ``(x, y)``, half-size ``s``.

    Equivalent to padding the frame by ``bsi = int(s * (1 + 2 * cs))`` pixels of
    110 on every side and slicing it as ``Columbia_test.crop_video`` does, without
    building the padded frame (:func:`lipsync.faces.crop.crop_region`).  Slice
    ends past the padded frame are clipped as numpy clips them; a start before it
    (a centre far outside the picture) is clamped to 0 instead of wrapping around.
    """
    import cv2

    c = contract or _contract(None)
    size = c.face_size
    region = crop_region(frame, x, y, s, c.crop_scale, c.crop_pad_value)
    if region is None:
        return np.full((size, size), c.crop_pad_value, dtype=np.uint8)
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
