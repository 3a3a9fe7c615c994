"""Job-level steps of a dub, as plain functions (the Prefect tasks wrap these).

``preflight`` checks every input before any work or output; ``prepare_audio``
builds the dubbed mix at the film's exact length; ``build_report`` gathers what an
operator reads.  Nothing here imports Prefect.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dubcore.manifest import DubJob
from dubcore.records import ShotList
from dubcore.timebase import format_rate

from .media.audio import MixResult, Stem, mix_stems
from .media.errors import MediaError
from .media.frames import LOSSLESS, EncodeSettings
from .media.probe import MediaInfo, probe, require_tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preflight:
    film: Path
    info: MediaInfo
    stems: tuple[Stem, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def preflight(job: DubJob) -> Preflight:
    """Check the film and every dub track exist and are usable; nothing is written."""
    notes: list[str] = []
    film = Path(job.film)
    info = probe(film)
    video = info.require_video()
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
    """Convert a VFR film to CFR at its nominal rate, losslessly (FFV1), keeping the audio."""
    video = info.require_video()
    from dubcore.schema import atomic_path

    with atomic_path(dst) as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(film)]
        cmd += ["-map", f"0:{video.index}", "-map", "0:a?", "-fps_mode", "cfr", "-r", format_rate(video.fps)]
        cmd += ["-c:v", "ffv1", "-pix_fmt", video.pix_fmt, "-c:a", "flac", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MediaError(f"{film}: could not conform to CFR: {proc.stderr.strip()}")
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


def encode_settings(job: DubJob) -> EncodeSettings:
    if job.options.video_codec == "ffv1":
        return LOSSLESS
    return EncodeSettings(codec=job.options.video_codec, crf=job.options.crf, preset=job.options.preset)


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
    video = pre.info.require_video()
    out_video = output_info.require_video()
    return {
        "title": job.title or Path(job.film).stem,
        "film": {"path": str(pre.film), "probe": pre.info.to_dict()},
        "dub": {
            "language": job.dub.language,
            "tracks": [{"role": s.role, "path": str(s.path), "gain_db": s.gain_db} for s in pre.stems],
            "mix": {"sample_rate": mix.sample_rate, "channels": mix.channels, "samples": mix.samples},
        },
        "output": {
            "film": output.name,
            "frame_count": out_video.frame_count,
            "fps": format_rate(out_video.fps),
            "frame_count_matches_source": out_video.frame_count == video.frame_count,
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
