"""QC: every re-voiced face of the delivered film measured per shot; qc/report.{json,csv,html} and Prefect artifacts."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import JobOptions
from dubcore.records import FaceTrack, Shot
from lipsync.qc.report import RANK, VERDICTS, QCReport, QCThresholds, ShotQC, write_qc_report
from lipsync.qc.shots import AudioSource, QCModels, qc_shot

from .retry import transient
from .faces import _device

TABLE_KEY = "dub-film-qc"
SUMMARY_KEY = "dub-film-qc-summary"
LINK_KEY = "dub-film-qc-report"
PROGRESS_KEY = "dub-film-qc-progress"


@lru_cache(maxsize=2)
def load_qc_models(syncnet_weights: str, asd_weights: str, device: str) -> tuple[QCModels, tuple[str, ...]]:
    """The QC models, loaded once per process; SyncNet is optional (its absence is a note, not an error)."""
    from lipsync import store
    from lipsync.models.light_asd import load_light_asd

    notes = []
    syncnet = None
    try:
        from lipsync.models.syncnet import load_syncnet

        syncnet = load_syncnet(store.resolve(syncnet_weights), device)
    except store.StoreError as exc:
        notes.append(f"SyncNet weights unavailable ({str(exc).splitlines()[0]}): LSE-D / LSE-C not measured; Light-ASD sync only")
    asd = load_light_asd(store.resolve(asd_weights), device)
    return QCModels(syncnet, asd), tuple(notes)


def thresholds_of(options: JobOptions) -> QCThresholds:
    return QCThresholds(**options.qc_thresholds.model_dump())


def start_progress(total: int) -> Any:
    return create_progress_artifact(0.0, key=PROGRESS_KEY, description=f"QC of {total} shot(s)")


@task(name="qc-shot", task_run_name="qc {shot.id} @ {shot.start_timecode}", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def qc_shot_task(
    shot: Shot,
    render: Mapping[str, Any],
    tracks: Sequence[FaceTrack],
    voices: Mapping[str, str | None],
    source: Path,
    output: Path,
    original_audio: AudioSource | None,
    voice_audio: Mapping[str, AudioSource],
    options: JobOptions,
    fps: Any,
    source_info: Any = None,
    output_info: Any = None,
    output_offset: int = 0,
    reference: Mapping[str, Any] | None = None,
) -> ShotQC:
    logger = get_run_logger()
    models, _ = load_qc_models(options.qc_syncnet_weights, options.asd_weights, _device(options.lipsync_device))
    result = qc_shot(shot, render, tracks, voices, source, output, original_audio, voice_audio, models, fps,
                     thresholds=thresholds_of(options), source_info=source_info, output_info=output_info,
                     output_offset=output_offset, reference=reference)
    for t in result.tracks:
        logger.info("%s %s: %s (%s)", shot.id, t.track_id, t.verdict, "; ".join(t.reasons))
    logger.info("%s: %s", shot.id, result.verdict)
    return result


def qc_markdown(report: QCReport, html_location: str) -> str:
    c = report.counts
    counts = ", ".join(f"{c[v]} {v}" for v in VERDICTS)
    lines = [f"# QC: {report.title}", "", f"**{counts}** "
             f"of {len(report.shots)} shot(s). Full report: [{html_location}]({html_location})", ""]
    lines += [f"Note: {n}" for n in report.signals.get("notes", [])]
    lines += ["", "| shot | start | end | status | verdict | tracks | casting |", "|---|---|---|---|---|---|---|"]
    for s in sorted(report.shots, key=lambda s: (RANK[s.verdict], s.frames[0])):
        tracks = ", ".join(f"{t.track_id} {t.verdict}" for t in s.tracks) or "-"
        casting = ", ".join(f"{c['track']}: {c['issue']}" for c in s.casting_issues) or "-"
        lines.append(f"| {s.shot_id} | {s.start_timecode} | {s.end_timecode} | {s.status} | {s.verdict} | {tracks} | {casting} |")
    return "\n".join(lines)


@task(name="qc-report", cache_policy=NO_CACHE)
def qc_report_task(report: QCReport, out_dir: Path, html_location: str) -> dict[str, Path]:
    """Write qc/report.json, .csv, .html; publish the table, the summary and the link as artifacts."""
    paths = write_qc_report(out_dir, report)
    create_table_artifact(report.rows(), key=TABLE_KEY, description=f"QC of every shot of {report.title}")
    create_markdown_artifact(qc_markdown(report, html_location), key=SUMMARY_KEY, description="QC summary")
    create_link_artifact(html_location, link_text="QC report (HTML)", key=LINK_KEY, description="Per-shot QC report")
    get_run_logger().info("QC: %s", report.counts)
    return paths


def progress_update(artifact_id: Any, done: int, total: int) -> None:
    if artifact_id is not None:
        update_progress_artifact(artifact_id, 100.0 * done / max(1, total))
