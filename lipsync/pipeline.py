"""Job-level steps of a dub, as plain functions (the Prefect tasks wrap these).

``preflight`` checks every input before any work or output; ``prepare_audio``
builds the dubbed mix at the film's exact length; ``build_report`` gathers what an
operator reads.  Nothing here imports Prefect.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from dubcore.manifest import DubJob
from dubcore.records import ShotList
from dubcore.timebase import format_rate

from .media.audio import MixResult, Stem, mix_stems
from .media.errors import MediaError
from .media.frames import AUTO, LOSSLESS, EncodeSettings, delivery_settings
from .media.probe import DamagedMediaError, MediaInfo, check_tail, media_arg, probe, require_tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preflight:
    film: Path
    info: MediaInfo
    stems: tuple[Stem, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The master as delivered, when ``film``/``info`` describe an intermediate (a VFR
    #: conform): the delivered codec follows it and the report describes it.
    source_info: MediaInfo | None = None


def preflight(job: DubJob) -> Preflight:
    """Check the film and every dub track exist and are usable; nothing is written.

    A truncated or damaged film is refused here (:class:`DamagedMediaError`: the
    container's declared length against its packets, the MP4 index, and a decode
    of its last GOP), with the number of readable frames."""
    notes: list[str] = []
    film = Path(job.film)
    info = probe(film)
    video = info.require_video()
    check_tail(info)
    if job.dub.language:
        from .media.language import iso639_2

        try:
            iso639_2(job.dub.language)
        except ValueError as exc:
            raise MediaError(f"manifest dub.language: {exc}") from None
    if job.options.video_codec in ("auto", "source"):
        chosen = delivery_settings(video, job.options.container)
        if chosen.codec == "libx264" and video.codec != "h264":
            notes.append(f"{film}: {video.codec} master delivered as H.264 in .{job.options.container} "
                         f"(see options.video_codec / options.container to keep the family)")
    if video.vfr:
        if job.options.vfr_policy == "refuse":
            raise MediaError(
                f"{film}: variable frame rate (nominal {format_rate(video.fps)} fps); frame-exact dubbing needs a "
                f"constant rate. Set options.vfr_policy: conform to convert it, or deliver a CFR master"
            )
        notes.append(f"{film}: variable frame rate; conformed to {format_rate(video.fps)} fps CFR")
    from . import store as model_store

    model_store.resolve(job.options.face_weights)  # missing or corrupt weights fail here, before any work
    if job.options.lipsync_checkpoint:
        model_store.resolve(job.options.lipsync_checkpoint)
    if job.options.runs_speakers and info.audio:
        model_store.resolve(job.options.asd_weights)
    stems: list[Stem] = []
    gains = {f"character:{c.name}": c.gain_db for c in job.dub.characters}
    for role, path in job.dub.files():
        p = Path(path)
        stem_info = probe(p)
        if not stem_info.audio:
            raise MediaError(f"{p}: dub track '{role}' has no audio stream; give an audio file")
        stems.append(Stem(p, role, gains.get(role, 0.0)))
    return Preflight(film, info, tuple(stems), tuple(notes))


def conform_vfr(film: Path, info: MediaInfo, dst: Path) -> Path:
    """Convert a VFR film to CFR at its nominal rate, losslessly (FFV1), keeping the audio.

    Frames are duplicated or dropped to fill the film's true duration (its packet
    timestamps) at the nominal rate; the result is refused (and not written) when it
    holds fewer frames than that duration needs: a conform never shortens a film."""
    video = info.require_video()
    from dubcore.schema import atomic_path

    duration = video.duration if video.duration is not None else Fraction(video.frame_count) / video.fps
    expected = int(duration * video.fps + Fraction(1, 2))
    with atomic_path(dst) as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(film)]
        cmd += ["-map", f"0:{video.index}", "-map", "0:a?", "-fps_mode", "cfr", "-r", format_rate(video.fps)]
        cmd += ["-c:v", "ffv1", "-pix_fmt", video.pix_fmt, "-c:a", "flac", media_arg(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise MediaError(f"{film}: could not conform to CFR: {proc.stderr.strip()}")
        got = probe(tmp).require_video().frame_count
        if got + 1 < expected:
            raise DamagedMediaError(
                f"{film}: conforming to {format_rate(video.fps)} fps CFR gave {got} frames, but the film lasts "
                f"{float(duration):.3f} s ({expected} frames); refused rather than delivering a shorter film. "
                f"Check the master (`dub probe {film}`) or deliver a CFR master", readable_frames=got)
    return dst


def prepare_audio(job: DubJob, pre: Preflight, dst: Path, workdir: Path) -> MixResult:
    """The dubbed mix of every stem, exactly as long as the picture."""
    video = pre.info.require_video()
    return mix_stems(
        pre.stems,
        dst,
        frame_count=video.frame_count,
        fps=video.fps,
        sample_rate=job.options.audio_sample_rate,
        length_policy=job.options.audio_length_policy,
        workdir=workdir,
    )


def prepare_dialogue(job: DubJob, pre: Preflight, dst: Path, workdir: Path, sample_rate: int) -> MixResult:
    """The dub's dialogue alone (no M&E) at the lip-sync model's rate, as long as the picture.

    With a finished full mix only, that mix is used (music and effects included)."""
    video = pre.info.require_video()
    dialogue = [s for s in pre.stems if s.role != "me"]
    return mix_stems(
        dialogue,
        dst,
        frame_count=video.frame_count,
        fps=video.fps,
        sample_rate=sample_rate,
        length_policy=job.options.audio_length_policy,
        workdir=workdir,
    )


def encode_settings(job: DubJob, source: MediaInfo | None = None) -> EncodeSettings:
    """How the delivered picture is encoded, and the dub's language for the audio tag.

    ``options.video_codec: auto`` (the default) follows the master's codec family:
    resolved here when ``source`` (the master's probe) is given, else by
    :func:`lipsync.media.assemble.assemble` from the film it reads.  An explicit
    encoder is used as given."""
    o = job.options
    language = job.dub.language
    if o.video_codec == "ffv1":
        return replace(LOSSLESS, audio_language=language)
    if o.video_codec in ("auto", "source"):
        if source is not None and source.video is not None:
            return delivery_settings(source.video, o.container, crf=o.crf, preset=o.preset, audio_language=language)
        return replace(AUTO, crf=o.crf, preset=o.preset, audio_language=language)
    return EncodeSettings(codec=o.video_codec, crf=o.crf, preset=o.preset, audio_language=language)


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("dub-film", "scenedetect-headless", "numpy", "prefect", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        first = subprocess.run([require_tool("ffmpeg"), "-version"], capture_output=True, text=True).stdout.splitlines()
        versions["ffmpeg"] = first[0].split()[2] if first else "?"
    except (MediaError, IndexError):
        pass
    return versions


def build_report(
    job: DubJob,
    pre: Preflight,
    mix: MixResult,
    shots: ShotList,
    renders: dict[str, dict[str, Any]],
    output: Path,
    output_info: MediaInfo,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The run's report.json payload (without the schema tag)."""
    source = pre.source_info or pre.info  # the master as delivered to us, not a conformed intermediate
    src_video = source.require_video()
    out_video = output_info.require_video()
    film: dict[str, Any] = {"path": str(job.film), "probe": source.to_dict()}
    if pre.source_info is not None:
        conformed = pre.info.require_video()
        film["conformed"] = {"path": pre.film.name, "frame_count": conformed.frame_count, "fps": format_rate(conformed.fps),
                             "reason": "variable frame rate conformed to a constant rate (options.vfr_policy: conform)"}
    matches = out_video.frame_count == src_video.frame_count
    return {
        "title": job.title or Path(job.film).stem,
        "film": film,
        "dub": {
            "language": job.dub.language,
            "tracks": [{"role": s.role, "path": str(s.path), "gain_db": s.gain_db} for s in pre.stems],
            "mix": {"sample_rate": mix.sample_rate, "channels": mix.channels, "samples": mix.samples},
        },
        "output": {
            "film": output.name,
            "frame_count": out_video.frame_count,
            "fps": format_rate(out_video.fps),
            "source_frame_count": src_video.frame_count,
            "frame_count_matches_source": matches,
            **({} if matches else {"frame_count_note": (
                f"the delivered film has {out_video.frame_count} frames, the source {src_video.frame_count}"
                + (" (conformed from a variable frame rate)" if pre.source_info is not None else ""))}),
        },
        "shots": [
            {**shot.to_dict(), **renders.get(shot.id, {"status": "unchanged", "reason": "not rendered"})}
            for shot in shots
        ],
        "summary": {
            "shots": len(shots),
            "rendered": sum(1 for r in renders.values() if r.get("status") == "rendered"),
            "unchanged": sum(1 for s in shots if renders.get(s.id, {}).get("status", "unchanged") == "unchanged"),
        },
        "notes": list(pre.notes) + list(mix.notes),
        "options": job.options.model_dump(mode="json"),
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "software": software_versions(),
    }


def shot_settings(options) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The keyword arguments of :func:`lipsync.shots.detect_shots` that a job's options decide
    (``dub run`` and ``dub match`` split a film the same way)."""
    return {"detectors": tuple(options.shot_detectors), "min_shot_frames": options.min_shot_frames,
            "detector_options": {"content": {"threshold": options.content_threshold}}}


def face_tracking_params(options):  # type: ignore[no-untyped-def]
    """The :class:`~lipsync.faces.pipeline.FaceTrackingParams` that a job's options decide."""
    from .faces.pipeline import FaceTrackingParams
    from .faces.track import TrackerParams

    return FaceTrackingParams(tracker=TrackerParams(min_face_size=options.face_min_size, min_track_frames=options.face_min_track_frames))


def track_job_faces(film, shots, info, options, device: str, store=None, progress=None):  # type: ignore[no-untyped-def]
    """Face tracks of every shot with the job's detector and tracking settings (a list of TrackingResult)."""
    from .faces.detect import build_detector
    from .faces.pipeline import track_film_faces

    detector = build_detector(options.face_weights, device=device, store=store,  # the entry's family picks the detector
                              batch_size=options.face_batch_size, max_size=options.face_max_size)
    return track_film_faces(film, shots, detector, face_tracking_params(options), batch_size=options.face_batch_size,
                            info=info, progress=progress)
