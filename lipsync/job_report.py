"""The content of a job's report.json beyond the film and its shots: what each stage decided.

:func:`lipsync.pipeline.build_report` writes the film, the dub, the output and the
shots; :func:`complete_report` adds, from the stages' records, each shot's faces and
drives, the casting, QC, fine-tuning, the casting preview and review, and where the
inputs came from.  The flow and the CLI only pass the records along.
"""

from __future__ import annotations

from typing import Any, Sequence

NOT_TRANSCRIBED = {"status": "not run", "reason": "WhisperX transcription and word timing are not part of this version"}


def speakers_summary(plan: Any) -> dict[str, Any]:
    """The report's view of the casting."""
    d = plan.to_dict()
    return {
        "characters": d["characters"],
        "off_screen": d["off_screen"],
        "voice_links": d["voice_links"],
        "decisions": d["decisions"],
        "review": d["review"],
        "notes": d["notes"],
    }


def complete_report(
    report: dict[str, Any],
    *,
    faces: Sequence[Any],
    plan: Any = None,
    qc: Any = None,
    finetuned: dict[str, Any] | None = None,
    preview: dict[str, Any] | None = None,
    review: dict[str, Any] | None = None,
    has_checkpoint: bool = True,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``report`` (from :func:`lipsync.pipeline.build_report`) with every stage's decisions added, in place."""
    report["qc"] = {"status": "not run", "reason": "options.qc is off, or lip-sync is not requested"} if qc is None else {
        "summary": qc.counts, "report": "qc/report.json", "html": "qc/report.html", "signals": dict(qc.signals)}
    tracks_by_shot = {r.shot_id: r for r in faces}
    for entry in report["shots"]:
        r = tracks_by_shot[entry["id"]]
        entry["faces"] = {"tracks": [t.id for t in r.tracks], "dropped": r.dropped_dicts()}
        if plan is not None:
            entry["drives"] = [{"track": d.track_id, "voice": d.voice, "frames": d.frames} for d in plan.drives_in(entry["id"])]
    if plan is not None:
        report["speakers"] = speakers_summary(plan)
    else:
        report["speakers"] = {"status": "not run",
                              "reason": "options.speakers is off, or lip-sync is not requested, or the film has no audio"}
    if finetuned is not None:
        report["finetune"] = finetuned
    if preview is not None:
        report["preview"] = preview
        if not has_checkpoint:
            report["notes"] = [*report.get("notes", []), preview["note"]]
    report["review"] = review if review is not None else {"status": "not requested", "reason": "options.review_casting is off"}
    report["transcription"] = dict(NOT_TRANSCRIBED)
    if inputs is not None:
        report["inputs"] = inputs
    return report


def fetched_inputs(source_job: Any) -> dict[str, Any]:
    """The report's ``inputs``: the job's inputs as the studio gave them (remote ones were downloaded and verified)."""
    return {"film": source_job.film, "dub": source_job.dub.model_dump(mode="json", exclude_none=True),
            "fetched": "downloaded and verified (size and checksum) before the run"}
