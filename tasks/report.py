"""Report: report.json for machines, a markdown artifact for the operator in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from dubcore.schema import write_json


def link(location: str, rel: str) -> str:
    """A URL of ``rel`` inside the published output ``location`` (a folder or an s3:// prefix)."""
    if "://" in location:
        return location.rstrip("/") + "/" + rel
    return (Path(location).resolve() / rel).as_uri()


def markdown_summary(report: dict[str, Any], location: str) -> str:
    s = report["summary"]
    lines = [
        f"# {report['title']}",
        "",
        f"Delivered **{report['output']['film']}** ({report['output']['frame_count']} frames at "
        f"{report['output']['fps']} fps) to `{location}`.",
        "",
        f"Shots: {s['shots']} ({s['rendered']} re-rendered, {s['unchanged']} unchanged).",
        "",
        f"- Film: [{report['output']['film']}]({link(location, report['output']['film'])})",
        f"- Shot list: [shots.json]({link(location, 'shots.json')})",
    ]
    qc = report.get("qc") or {}
    if qc.get("html"):
        counts = ", ".join(f"{n} {v}" for v, n in sorted((qc.get("summary") or {}).items()))
        lines.append(f"- QC report: [{qc['html']}]({link(location, qc['html'])})" + (f" ({counts})" if counts else ""))
    lines += [
        "",
        "| shot | frames | start | end | status |",
        "|---|---|---|---|---|",
    ]
    for shot in report["shots"]:
        lines.append(
            f"| {shot['id']} | {shot['frames'][0]}-{shot['frames'][1]} | {shot['start_timecode']} | "
            f"{shot['end_timecode']} | {shot['status']} |"
        )
    if report["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines)


@task(name="report", cache_policy=NO_CACHE)
def report_task(report: dict[str, Any], out_dir: Path, location: str) -> Path:
    path = write_json(out_dir / "report.json", "report", report)
    create_markdown_artifact(markdown=markdown_summary(report, location), key="dub-film-summary", description="dub-film run summary")
    get_run_logger().info("report written: %s", path)
    return path
