"""Build a training set (:mod:`lipsync.train.data` format) from films: the frames where a tracked face speaks.

Per film (streamed; one clip's crops at most are written at a time, through a
memory-mapped ``.npy``, so a film is never held):

1. probe; shots (:func:`lipsync.shots.detect_shots`); faces detected and tracked
   per shot (:func:`lipsync.faces.pipeline.track_film_faces`, the same tracks
   ``dub faces`` makes);
2. the film's own audio decoded once to 16 kHz mono float32
   (:func:`lipsync.speakers.asd.audio_16k_memmap`, soxr), memory-mapped; Light-ASD
   scores every track against it (:func:`lipsync.speakers.asd.score_tracks`, as
   ``dub asd``);
3. **selection**: the ASD stage's own decision, written beside the clips as
   ``films/<film>.asd.json`` (the ``dub asd`` format, beside the film's
   ``films/<film>.faces.json`` in the ``dub faces`` format): film frame ``f`` belongs to
   track ``T`` when ``T`` is marked speaking at ``f`` (median-filtered score above
   ``AsdParams.threshold`` for at least ``min_speech_seconds``) and has the
   highest filtered score of the tracks marked speaking there
   (:func:`select_speaking`, the rule of ``AsdResult.speaker_at``).  Runs of
   consecutive selected frames of one track are the candidate clips (a track
   lives in one shot, so a clip never crosses a cut);
4. **frame rate**: clips are written at ``fps`` (25).  A run of film frames
   ``[a, b)`` at rate ``r`` becomes ``N = floor((b - a) * fps / r)`` ticks; tick
   ``k`` covers ``[a/r + k/fps, a/r + (k+1)/fps)`` and shows the film frame on
   screen at its centre, ``a + floor((k + 1/2) * r / fps)`` (the ASD stage's rule;
   at 25 fps tick ``k`` is frame ``a + k``).  Every shown frame is a selected
   frame.  Runs shorter than ``min_clip_frames`` ticks are dropped (default 5:
   the expert's and Wav2Lip's 5-frame windows must fit); runs longer than
   ``max_clip_frames`` are cut into near-equal consecutive clips (bounded
   memory for readers that load a clip);
5. **crops** are the inference crop (:func:`lipsync.render.blend.crop_box` with
   :class:`~lipsync.render.params.CropParams`, resized to ``face_size`` as
   ``Wav2Lip.contract.resize_face`` does: bilinear, the training contract), of the same pixels :meth:`LipSyncEngine.render_shot` sees:
   4:2:0 sources are read as their planes and converted with OpenCV
   (``even=True`` boxes), others as ``bgr24``;
6. **audio**: clip sample 0 is ``frame_to_sample(a, r, sample_rate)`` (the exact
   start of its first tick, rounded to the nearest sample) plus ``k0 * spf`` for
   a clip starting at tick ``k0``; the WAV holds exactly ``N * spf`` samples
   (``spf = sample_rate / fps`` = 640), 16-bit PCM (``rint(x * 32768)``
   clipped, as ffmpeg's float -> s16 conversion), zero-padded past the end of
   the film's audio (counted in ``source.audio_padded``).

Characters and splits (a clip's character, ``train`` or ``val`` per character):
:mod:`lipsync.train.sources`.

Output: ``clips/<id>.faces.npy`` + ``clips/<id>.wav`` per clip, each written to a
temporary name and renamed; ``dataset.json`` last (atomic), with counts per
split and hours.  Bad input (a missing film, a file that is not a video with
sound, a bad ``val_films`` name) is refused before anything is written; a
failure midway removes what this run wrote.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.schema import atomic_path, write_json
from dubcore.timebase import FrameRange, format_rate, frame_to_sample

from .data import SCHEMA_KIND
from .sources import FilmSource, _check_films, _resolve_val_films, character_of, character_split, name_sources

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``; stage names the film and step, e.g. ``"bbaf2n: faces"``.
Progress = Callable[[str, int, int], None]

__all__ = ["FilmSource", "ClipPlan", "name_sources", "build_dataset", "build_film_dataset", "write_film_clips", "select_speaking", "plan_clips",
           "inference_crop", "character_split"]


@dataclass(frozen=True)
class ClipPlan:
    """One clip to write: a run of film frames ``run`` of ``track`` and the ticks ``[k0, k1)`` of it at ``fps``."""

    track: FaceTrack
    run: FrameRange
    k0: int
    k1: int

    @property
    def frames(self) -> int:
        return self.k1 - self.k0


# --------------------------------------------------------------------------- selection


def select_speaking(asd: Any, tracks: Sequence[FaceTrack]) -> dict[str, list[FrameRange]]:
    """Per track id, the runs of film frames where that track is *the* active speaker.

    The ASD stage's own decision (:meth:`lipsync.speakers.asd.AsdResult.speaker_at`
    with nothing known of the audio): frame ``f`` goes to track ``T`` when ``T`` is
    marked speaking at ``f`` (filtered score above the threshold for at least the
    minimum duration) and has the highest filtered score of the tracks marked
    speaking there (first in ``asd.tracks`` on a tie).  Indexed by frame, so a
    film's cost is linear in its track frames.
    """
    best: dict[int, tuple[float, int]] = {}  # frame -> (filtered score, index in asd.tracks)
    for i, ts in enumerate(asd.tracks):
        for r in ts.speaking:
            for f in r:
                v = ts.smoothed[f - ts.frames.start]
                cur = best.get(f)
                if cur is None or v > cur[0]:
                    best[f] = (v, i)
    index = {ts.track_id: i for i, ts in enumerate(asd.tracks)}
    runs: dict[str, list[FrameRange]] = {t.id: [] for t in tracks}
    for t in tracks:
        i = index.get(t.id)
        start = None
        for f in t.frames:
            on = i is not None and f in best and best[f][1] == i
            if on and start is None:
                start = f
            elif not on and start is not None:
                runs[t.id].append(FrameRange(start, f))
                start = None
        if start is not None:
            runs[t.id].append(FrameRange(start, t.frames.end))
    return runs


def tick_count(run: FrameRange, film_fps: Fraction, fps: int) -> int:
    """Whole ``fps`` ticks inside ``run`` (film frames at ``film_fps``)."""
    return math.floor(Fraction(run.duration * fps) / film_fps)


def tick_frame(run: FrameRange, k: int, film_fps: Fraction, fps: int) -> int:
    """Film frame on screen at the centre of tick ``k`` of ``run``."""
    return run.start + math.floor(Fraction(2 * k + 1, 2) * film_fps / fps)


def plan_clips(track: FaceTrack, runs: Iterable[FrameRange], film_fps: Fraction, fps: int,
               min_clip_frames: int, max_clip_frames: int | None) -> list[ClipPlan]:
    """Clips of ``track`` from its speaking runs: at least ``min_clip_frames`` ticks, long runs cut evenly."""
    out = []
    for run in runs:
        n = tick_count(run, film_fps, fps)
        if n < min_clip_frames:
            continue
        parts = 1 if not max_clip_frames else max(1, math.ceil(n / max_clip_frames))
        bounds = [round(n * j / parts) for j in range(parts + 1)]
        out += [ClipPlan(track, run, a, b) for a, b in zip(bounds, bounds[1:])]
    return out


# --------------------------------------------------------------------------- crops


def inference_crop(bgr: np.ndarray, box: Sequence[float], face_size: int, crop: Any = None, even: bool = False) -> np.ndarray:
    """The face crop Wav2Lip inference feeds the generator (:meth:`LipSyncEngine.render_shot`): uint8 BGR ``(S, S, 3)``.

    Resized by the training contract (``Wav2Lip.contract.resize_face``)."""
    from lipsync.render.blend import crop_box
    from lipsync.render.params import CropParams
    from lipsync.models.wav2lip import Wav2Lip

    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = crop_box(box, crop or CropParams(), (w, h), even=even)
    return Wav2Lip.contract.resize_face(bgr[y1:y2, x1:x2], face_size)


def pixel_domain(pix_fmt: str, width: int, height: int) -> tuple[Any, bool]:
    """How inference reads this video's pixels: its domain (``read_fmt``, ``to_bgr``) and whether crop boxes are even."""
    from lipsync.render.blend import I420Domain as _I420Domain
    from lipsync.render.blend import frame_domain as _domain

    domain = _domain(pix_fmt, width, height)
    return domain, isinstance(domain, _I420Domain)


# --------------------------------------------------------------------------- building


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _write_clip(film_path: Path, info: Any, plan: ClipPlan, cid: str, clips_dir: Path, audio: np.ndarray,
                film_fps: Fraction, fps: int, sample_rate: int, face_size: int, crop: Any) -> dict[str, Any]:
    import soundfile as sf

    from lipsync.media.frames import FrameReader

    v = info.require_video()
    domain, even = pixel_domain(v.pix_fmt, v.width, v.height)
    shown = [tick_frame(plan.run, k, film_fps, fps) for k in range(plan.k0, plan.k1)]
    n = len(shown)
    first, last = shown[0], shown[-1]
    faces_path = clips_dir / f"{cid}.faces.npy"
    with atomic_path(faces_path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, face_size, face_size, 3))
        want: dict[int, list[int]] = {}
        for j, f in enumerate(shown):
            want.setdefault(f, []).append(j)
        with FrameReader(film_path, frames=FrameRange(first, last + 1), pix_fmt=domain.read_fmt, info=info) as reader:
            for f, raw in zip(range(first, last + 1), reader):
                js = want.get(f)
                if not js:
                    continue
                face = inference_crop(domain.to_bgr(raw), plan.track.at(f).box, face_size, crop, even)
                for j in js:
                    arr[j] = face
        arr.flush()
        del arr
    spf = sample_rate // fps
    start = frame_to_sample(plan.run.start, film_fps, sample_rate, "round") + plan.k0 * spf
    need = n * spf
    seg = np.zeros(need, dtype=np.float32)
    a0, a1 = max(start, 0), min(start + need, len(audio))
    if a1 > a0:
        seg[a0 - start:a1 - start] = audio[a0:a1]
    pcm = np.clip(np.rint(seg.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    with atomic_path(clips_dir / f"{cid}.wav") as tmp:
        sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV")
    return {"frames": n, "film_frames": [first, last + 1], "audio_start": start, "audio_padded": need - max(0, a1 - a0)}


def write_film_clips(
    path: Path, info: Any, tracks: Sequence[FaceTrack], asd: Any, audio: np.ndarray, clips_dir: Path, *,
    name: str, uri: str, character: Callable[[FaceTrack], str], fps: int = 25, sample_rate: int = 16000,
    face_size: int = 96, min_clip_frames: int = 5, max_clip_frames: int | None = 250, crop: Any = None,
    written: list[Path] | None = None, progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write the clips of one film whose faces are tracked (``tracks``) and scored (``asd``, an ``AsdResult``).

    ``audio``: the film's soundtrack at ``sample_rate`` mono float32 (e.g. the
    memory map of :func:`lipsync.speakers.asd.audio_16k_memmap`).  Returns the clip
    entries (split ``"train"``) and the film's row of ``dataset.json``; every file
    written is appended to ``written`` first (so a caller can remove them on failure).
    """
    from lipsync.render.params import CropParams

    crop = crop or CropParams()
    written = written if written is not None else []
    v = info.require_video()
    film_fps = v.fps
    runs = select_speaking(asd, tracks)
    plans = [p for t in tracks for p in plan_clips(t, runs[t.id], film_fps, fps, min_clip_frames, max_clip_frames)]
    plans.sort(key=lambda p: (p.run.start, p.k0, p.track.id))
    clips = []
    for i, plan in enumerate(plans):
        cid = _safe(f"{name}-{plan.track.id}-{tick_frame(plan.run, plan.k0, film_fps, fps):07d}")
        written += [clips_dir / f"{cid}.faces.npy", clips_dir / f"{cid}.wav"]
        got = _write_clip(path, info, plan, cid, clips_dir, audio, film_fps, fps, sample_rate, face_size, crop)
        clips.append({
            "id": cid, "film": name, "character": character(plan.track), "split": "train",
            "frames": got["frames"], "faces": f"clips/{cid}.faces.npy", "audio": f"clips/{cid}.wav",
            "source": {"shot": plan.track.shot_id, "track": plan.track.id, "film_frames": got["film_frames"],
                       "film_fps": [film_fps.numerator, film_fps.denominator],
                       "audio_start": got["audio_start"], "audio_padded": got["audio_padded"]},
        })
        if progress:
            progress(f"{name}: clips", i + 1, len(plans))
    row = {"name": name, "source": uri, "fps": format_rate(film_fps), "frame_count": v.frame_count,
           "tracks": len(tracks), "speaking_frames": sum(r.duration for rs in runs.values() for r in rs), "clips": len(clips)}
    return clips, row


def _write_manifest(out: Path, clips: list[dict[str, Any]], film_rows: list[dict[str, Any]], *, fps: int, sample_rate: int,
                    face_size: int, params: Mapping[str, Any]) -> Path:
    """``dataset.json`` with counts and hours per split (written last, atomically)."""
    for row in film_rows:
        row["split"] = sorted({c["split"] for c in clips if c["film"] == row["name"]})
    counts: dict[str, Any] = {}
    hours: dict[str, float] = {}
    for s in ("train", "val"):
        mine = [c for c in clips if c["split"] == s]
        frames = sum(c["frames"] for c in mine)
        counts[s] = {"clips": len(mine), "frames": frames, "characters": len({c["character"] for c in mine}),
                     "films": len({c["film"] for c in mine})}
        hours[s] = round(frames / fps / 3600, 6)
    counts["total"] = {"clips": len(clips), "frames": sum(c["frames"] for c in clips), "films": len(film_rows)}
    hours["total"] = round(counts["total"]["frames"] / fps / 3600, 6)
    return write_json(out / "dataset.json", SCHEMA_KIND, {
        "fps": fps, "sample_rate": sample_rate, "face_size": face_size, "samples_per_frame": sample_rate // fps,
        "clips": clips, "counts": counts, "hours": hours, "films": film_rows, "params": dict(params),
    })


def build_film_dataset(
    film: str | os.PathLike[str], info: Any, tracks: Sequence[FaceTrack], asd: Any, audio: np.ndarray,
    out: str | os.PathLike[str], *, name: str | None = None, characters: Mapping[str, str] | None = None,
    min_clip_frames: int = 5, max_clip_frames: int | None = 250, crop: Any = None, progress: Progress | None = None,
) -> Path:
    """A training set (all ``train``) from one film the pipeline has already tracked and scored.

    For fine-tuning on the film at hand (the flow's ``options.finetune``): the
    tracks, ASD result and 16 kHz soundtrack are the ones the job computed, so
    nothing is detected twice.  ``characters``: a name per track id (e.g. the
    casting's); unnamed tracks are their own character.
    """
    path, out = Path(film), Path(out)
    name = name or path.stem
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty; give a new folder")
    written: list[Path] = []
    try:
        (out / "clips").mkdir(parents=True, exist_ok=True)
        clips, row = write_film_clips(path, info, tracks, asd, audio, out / "clips", name=name, uri=str(film),
                                      character=lambda t: (characters or {}).get(t.id, t.id),
                                      min_clip_frames=min_clip_frames, max_clip_frames=max_clip_frames, crop=crop,
                                      written=written, progress=progress)
        return _write_manifest(out, clips, [row], fps=25, sample_rate=16000, face_size=96,
                               params={"min_clip_frames": min_clip_frames, "max_clip_frames": max_clip_frames,
                                       "asd": dict(asd.params), "from": "pipeline tracks and ASD of one film"})
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def build_dataset(
    films: Sequence[FilmSource | str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    detector: Any,
    asd_model: Any,
    face_size: int = 96,
    fps: int = 25,
    sample_rate: int = 16000,
    min_clip_frames: int = 5,
    max_clip_frames: int | None = 250,
    asd_params: Any = None,
    asd_info: Mapping[str, Any] | None = None,
    val_films: Iterable[str | os.PathLike[str]] = (),
    val_characters: Iterable[str] = (),
    val_fraction: float = 0.0,
    crop: Any = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Build the dataset folder ``out`` from ``films`` (see the module docstring); returns ``out/dataset.json``.

    ``detector``: a :class:`lipsync.faces.detect.FaceDetector`; ``asd_model``: a
    loaded :class:`lipsync.models.light_asd.LightASD`; ``asd_params``: its
    :class:`~lipsync.speakers.asd.AsdParams` (filter, threshold and minimum
    duration of the selection); ``asd_info``: what the weights are, recorded in
    each film's ``asd.json``.
    """
    from dubcore.storage import open_storage
    from lipsync.faces.facesfile import write_faces
    from lipsync.faces.pipeline import FaceTrackingParams, track_film_faces
    from lipsync.render.params import CropParams
    from lipsync.media.audio import audio_stream
    from lipsync.media.probe import probe
    from lipsync.shots import detect_shots
    from lipsync.speakers.asd import AsdParams, AsdResult, audio_16k_memmap, score_tracks

    sources = [f if isinstance(f, FilmSource) else FilmSource(f) for f in films]
    track_params = FaceTrackingParams()
    out = Path(out)
    params = asd_params or AsdParams()
    crop = crop or CropParams()
    if Fraction(sample_rate, fps).denominator != 1:
        raise ValueError(f"{sample_rate} Hz is not a whole number of samples per frame at {fps} fps")
    if min_clip_frames < 1 or (max_clip_frames is not None and max_clip_frames < min_clip_frames):
        raise ValueError(f"need 1 <= min_clip_frames <= max_clip_frames, got {min_clip_frames}, {max_clip_frames}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    _check_films(sources)
    val_names = _resolve_val_films(sources, val_films)
    if (out / "dataset.json").exists() or (out.exists() and any(out.iterdir())):
        raise ValueError(f"{out}: not empty (holds a dataset or other files); give a new --out folder")

    created = not out.exists()
    clips_dir = out / "clips"
    written: list[Path] = []
    clips: list[dict[str, Any]] = []
    film_rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dub-dataset-", dir=workdir) as tmp:
            clips_dir.mkdir(parents=True, exist_ok=True)
            (out / "films").mkdir(exist_ok=True)
            for film_index, src in enumerate(sources):
                name = src.film_name
                fdir = Path(tmp) / f"film-{film_index:03d}"
                fdir.mkdir()
                path = Path(open_storage(src.uri).local_path(src.uri, fdir))

                def stage(step: str, name: str = name) -> Callable[[int, int], None]:
                    return lambda done, total: progress(f"{name}: {step}", done, total) if progress else None

                info = probe(path)
                v = info.require_video()
                audio_stream(info)  # a clear error for a film without sound
                film_fps = v.fps
                shots = detect_shots(path, info=info, progress=stage("shots"))
                results = track_film_faces(path, shots, detector, track_params, info=info, progress=stage("faces"))
                tracks = [t for r in results for t in r.tracks]
                faces_path = out / "films" / f"{_safe(name)}.faces.json"
                written.append(faces_path)
                write_faces(faces_path, source=src.uri, fps=shots.fps, frame_count=shots.frame_count, shots=list(shots),
                            tracks=tracks, dropped=[d for r in results for d in r.dropped_dicts()],
                            params={"detector": detector.describe() if hasattr(detector, "describe") else str(detector),
                                    **track_params.to_dict()})
                audio = audio_16k_memmap(path, fdir / "audio16k.f32")
                scores = score_tracks(path, tracks, audio, 0, asd_model, fps=film_fps, info=info, params=params,
                                      progress=stage("asd")) if tracks else {}
                asd = AsdResult.from_scores(src.uri, film_fps, v.frame_count, tracks, scores, params,
                                            model=asd_info)
                asd_path = out / "films" / f"{_safe(name)}.asd.json"
                written.append(asd_path)
                asd.write(asd_path)  # provenance: the decisions the clips were cut from
                film_clips, row = write_film_clips(
                    path, info, tracks, asd, audio, clips_dir, name=name, uri=src.uri,
                    character=lambda t, src=src, w=v.width: character_of(src, t, w), fps=fps, sample_rate=sample_rate,
                    face_size=face_size, min_clip_frames=min_clip_frames, max_clip_frames=max_clip_frames, crop=crop,
                    written=written, progress=progress)
                clips += film_clips
                film_rows.append({**row, "shots": len(shots)})
                log.info("%s: %d track(s), %d clip(s)", name, len(tracks), len(film_clips))
                del audio
        split = character_split(clips, val_names, val_characters, val_fraction)
        for c in clips:
            c["split"] = split[c["character"]]
        return _write_manifest(out, clips, film_rows, fps=fps, sample_rate=sample_rate, face_size=face_size, params={
            "min_clip_frames": min_clip_frames, "max_clip_frames": max_clip_frames,
            "asd": params.to_dict(), "crop": asdict(crop), "val_films": sorted(val_names),
            "val_characters": sorted(set(val_characters)), "val_fraction": val_fraction,
            "detector": detector.describe() if hasattr(detector, "describe") else str(detector),
        })
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        for d in (clips_dir, out / "films"):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
        if created and out.exists() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise

