"""Operator review of the casting in the Prefect UI: artifacts, the casting preview, the wait for input.

With ``options.review_casting`` the flow stops after casting, before anything is
rendered, and:

1. renders the casting preview (:mod:`lipsync.preview`) and copies it, with the plan
   as reviewed (``speakers.json``) and the face thumbnails, to the **review folder**
   ``OUTPUT/review/<flow-run-id>/`` (local folder or object storage: the place an
   operator can open; it is not part of the published film and stays as the record
   of what was shown);
2. publishes the artifacts ``dub-film-casting-review`` (markdown: per shot, each face's
   thumbnail, character, voice, confidence, reason, and the ids to edit),
   ``dub-film-casting`` (the same as a table) and ``dub-film-casting-preview`` (link);
3. waits for a :class:`CastingReview` form filled in the UI (or sent through the API
   with ``resume_flow_run(flow_run_id, run_input={...})``): from a deployment the run
   is **suspended** (its process exits; no worker, container or GPU is held; on
   resume the flow runs again from the start, its stages are cached, and the answer is
   read back), in-process (``dub run``) it is **paused** (the process polls the API).

The answer's ``voices`` / ``tracks`` are merged into the job's ``casting`` (the answer
wins key by key) and the flow casts again with them.  An answer naming an unknown id
asks again (a second review round, with the error on top).  ``approve: false`` fails
the run; so does no answer within ``options.review_timeout_s``: nothing is rendered
and nothing is published.
"""

from __future__ import annotations

import base64
import html
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.input import RunInput
from pydantic import Field

from dubcore.manifest import Casting, DubJob
from dubcore.schema import atomic_path
from dubcore.storage import open_storage, scheme_of
from lipsync.preview import CastingView, PreviewResult, render_preview

from .retry import transient

REVIEW_ARTIFACT = "dub-film-casting-review"
TABLE_ARTIFACT = "dub-film-casting"
PREVIEW_ARTIFACT = "dub-film-casting-preview"
#: Thumbnails inlined in the markdown artifact at most (the others are in the review folder).
MAX_INLINE_THUMBNAILS = 200
#: How often a paused (in-process) run asks the API whether it was resumed.
POLL_S = 2
NO_WEIGHTS_NOTE = "no Wav2Lip weights: casting preview rendered instead of lips"


class ReviewError(RuntimeError):
    """The casting review ended without an approved casting (rejected or timed out): nothing was rendered."""


class CastingReview(RunInput):
    """The operator's answer to a casting review (the form the Prefect UI shows on a paused run)."""

    approve: bool = Field(True, description="Render the film with the casting below. Unticked: the run stops (fails); nothing is rendered.")
    voices: dict[str, str] = Field(
        default_factory=dict,
        description="Dubbed voice -> original speaker, e.g. {\"ALICE\": \"SPK01\"} (as the manifest's casting.voices); "
        "merged into the job's casting, these win.")
    tracks: dict[str, str | None] = Field(
        default_factory=dict,
        description="Face track -> original speaker, e.g. {\"shot-0003/face-01\": \"SPK00\"}, or null: never lip-sync that face "
        "(as the manifest's casting.tracks); merged into the job's casting, these win.")
    comment: str = Field("", description="A note kept in the run report.")


def review_key(round_: int) -> str:
    return f"casting-review-{round_}"


def flow_run_id() -> str:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else "local"


def from_deployment() -> bool:
    """Whether this flow run was started from a deployment (then it suspends; otherwise it pauses)."""
    ctx = FlowRunContext.get()
    return bool(ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id)


def already_answered(key: str) -> bool:
    """A suspended run resumed: it runs again from the start, and the answer to ``key`` is already stored."""
    if not from_deployment():
        return False
    from prefect.input.actions import read_flow_run_input

    return read_flow_run_input(f"suspended-{key}-response") is not None


def plan_digest(plan_dict: Mapping[str, Any]) -> str:
    """What the operator approves: every face's character, voice and re-voiced frames (sha256)."""
    import hashlib
    import json

    links = sorted((str(l["track"]), str(l.get("speaker"))) for l in plan_dict.get("track_links", []))
    drives = sorted((str(d["track"]), str(d["voice"]), [list(r) for r in d["speaking"]]) for d in plan_dict.get("drives", []))
    voices = sorted((str(v["role"]), str(v["speaker"])) for v in plan_dict.get("voice_links", []))
    return hashlib.sha256(json.dumps([links, drives, voices]).encode()).hexdigest()


def save_shown_digest(key: str, digest: str) -> None:
    """Remember (in the flow run's inputs) which plan review ``key`` showed."""
    from prefect.input.actions import create_flow_run_input

    create_flow_run_input(key=f"{key}-plan-sha256", value=digest)


def shown_digest(key: str) -> str | None:
    from prefect.input.actions import read_flow_run_input

    value = read_flow_run_input(f"{key}-plan-sha256")
    return None if value is None else str(value)


def merged_casting(casting: Casting, answer: CastingReview) -> Casting:
    """The job's casting with the operator's entries on top (key by key)."""
    return Casting(voices={**casting.voices, **answer.voices}, tracks={**casting.tracks, **answer.tracks})


def review_folder_uri(job: DubJob, run_id: str) -> str:
    out = str(job.output).rstrip("/")
    if "://" in out and scheme_of(out) != "file":
        return f"{out}/review/{run_id}"
    base = Path(out[len("file://"):] if out.startswith("file://") else out).expanduser().resolve()
    return str(base / "review" / run_id)


def _link(uri: str) -> str:
    return uri if "://" in uri else Path(uri).as_uri()


@task(name="casting-preview", cache_policy=NO_CACHE)
def preview_task(film: Path, info, tracks, plan_dict: Mapping[str, Any], out: Path) -> PreviewResult:  # type: ignore[no-untyped-def]
    """The casting preview video (see lipsync.preview), with one thumbnail per face track."""
    logger = get_run_logger()
    view = CastingView.from_plan_dict(plan_dict, [t.id for t in tracks])
    t0 = time.perf_counter()
    result = render_preview(film, tracks, view, out, info=info)
    logger.info("casting preview: %d frames at %dx%d in %.1f s -> %s", result.frames, result.width, result.height,
                time.perf_counter() - t0, out)
    return result


@task(name="publish-review-folder", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def publish_review_folder_task(job: DubJob, run_id: str, files: Mapping[str, Path]) -> dict[str, str]:
    """Copy the review material to ``OUTPUT/review/<run-id>/``; returns name -> URI (or local path)."""
    folder = review_folder_uri(job, run_id)
    out: dict[str, str] = {}
    if "://" in folder:
        storage = open_storage(folder)
        put = getattr(storage, "put_file", None)
        if put is None:
            raise RuntimeError(f"{folder}: storage scheme has no single-file upload; review material cannot be published")
        for name, path in files.items():
            put(Path(path), f"{folder}/{name}")
            out[name] = f"{folder}/{name}"
        return out
    dest = Path(folder)
    for name, path in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        out[name] = str(target)
    return out


def _thumb_md(jpeg: bytes | None, alt: str) -> str:
    if not jpeg:
        return ""
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')})"


def table_rows(view: CastingView) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(view.tracks.values(), key=lambda t: (t.shot_id, t.track_id)):
        rows.append({"shot": t.shot_id, "track": t.track_id, "character": t.character or "", "voice": t.voice or "",
                     "driven": t.driven, "frames": sum(r.duration for r in t.speaking),
                     "confidence": None if t.confidence is None else round(t.confidence, 3),
                     "review": t.review, "reason": t.reason})
    return rows


def review_markdown(view: CastingView, thumbnails: Mapping[str, bytes], files: Mapping[str, str], *, title: str,
                    timeout_s: int, deadline: datetime, speakers: Sequence[str], error: str | None = None,
                    inline_limit: int = MAX_INLINE_THUMBNAILS) -> str:
    """The review artifact: what to check, per shot and face, and the ids the form takes."""
    lines = [f"# Casting review: {html.escape(title)}", ""]
    if error:
        lines += [f"> **The last answer was refused:** {error}", "> Fix it and submit again.", ""]
    preview = files.get("preview.mp4")
    lines += ["Nothing has been rendered yet. Check who speaks as whom, then resume the run "
              "(**Resume** on the flow run) with the form: approve, or edit `voices` / `tracks` "
              "(the manifest's `casting` shapes; your entries are merged into the job's casting and win).", ""]
    if preview:
        lines += [f"* Casting preview (driven faces boxed in their voice's colour, tinted where they will be re-voiced): "
                  f"[{preview}]({_link(preview)})"]
    if files.get("speakers.json"):
        lines += [f"* Plan as reviewed: [{files['speakers.json']}]({_link(files['speakers.json'])})"]
    lines += [f"* Original speakers: {', '.join(f'`{s}`' for s in speakers) or '(none)'}; "
              f"dubbed voices: {', '.join(f'`{v}`' for v in view.voices) or '(none)'}; "
              f"off screen: {', '.join(f'`{s}`' for s in view.off_screen) or 'nobody'}",
              f"* Unanswered by {deadline:%Y-%m-%d %H:%M} UTC ({timeout_s} s): the run fails, nothing is rendered or "
              "published; approve later by re-running with `casting:` in the manifest or `review_casting: false`.", ""]
    by_shot: dict[str, list[Any]] = {}
    for t in view.tracks.values():
        by_shot.setdefault(t.shot_id, []).append(t)
    shown = 0
    for shot in sorted(by_shot):
        lines += [f"## {shot}", "", "| face | track | character | voice | frames re-voiced | confidence | reason |",
                  "|---|---|---|---|---|---|---|"]
        for t in sorted(by_shot[shot], key=lambda t: t.track_id):
            thumb = ""
            if shown < inline_limit and t.track_id in thumbnails:
                thumb = _thumb_md(thumbnails.get(t.track_id), t.track_id)
                shown += 1
            conf = "" if t.confidence is None else f"{t.confidence:.2f}"
            flag = " ⚠ review" if t.review else ""
            frames = sum(r.duration for r in t.speaking)
            reason = t.reason.replace("|", "/")
            lines.append(f"| {thumb} | `{t.track_id}` | {t.character or '—'} | {t.voice or '— (not driven)'} | "
                         f"{frames} | {conf}{flag} | {reason} |")
        lines.append("")
    if view.notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in view.notes] + [""]
    return "\n".join(lines)


def publish_review_artifacts(markdown: str, view: CastingView, preview_uri: str | None) -> None:
    create_markdown_artifact(markdown, key=REVIEW_ARTIFACT, description="Casting to review before rendering")
    create_table_artifact(table_rows(view), key=TABLE_ARTIFACT, description="Casting: one row per face track")
    if preview_uri:
        create_link_artifact(_link(preview_uri), link_text="casting preview", key=PREVIEW_ARTIFACT,
                             description="Casting preview video (low resolution, driven faces boxed and tinted)")


def form_for(casting: Casting, description: str) -> type[CastingReview]:
    """The form, pre-filled with the job's own overrides (what the operator edits)."""
    return CastingReview.with_initial_data(description=description, approve=True, voices=dict(casting.voices),
                                           tracks=dict(casting.tracks), comment="")


def timeout_message(timeout_s: int, where: str) -> str:
    return (f"casting review timed out after {timeout_s} s: nothing rendered, nothing published; approve by re-running "
            f"with `casting:` (voices / tracks) in the manifest or `review_casting: false` (the plan that was shown: {where})")


def wait_for_review(form: type[CastingReview], key: str, timeout_s: int, where: str) -> CastingReview:
    """Suspend (deployment) or pause (in-process) until the operator answers; the answer."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    logger = get_run_logger()
    if from_deployment():
        logger.warning("waiting for the casting review (%s): suspended, nothing held; resume the flow run %s in the UI. "
                       "Unanswered after %d s the run fails ('paused and never resumed'): nothing rendered or published.",
                       key, flow_run_id(), timeout_s)
        return suspend_flow_run(wait_for_input=form, timeout=timeout_s, key=key)
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() if PREFECT_API_URL.value() else None
    where_ui = (f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id()}" if ui else
                "no Prefect server is configured (temporary local API): set PREFECT_API_URL to a server with the UI to answer")
    logger.warning("waiting for the casting review (%s): paused; resume the flow run %s (up to %d s): %s",
                   key, flow_run_id(), timeout_s, where_ui)
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=min(POLL_S, max(1, timeout_s)), key=key)
    except FlowPauseTimeout:
        message = timeout_message(timeout_s, where)
        # The server's pause-expiry service may fail the run first with its own words; ours say what to do.
        from prefect.client.orchestration import get_client
        from prefect.states import Failed

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(ctx.flow_run.id, Failed(message=message), force=True)
        raise ReviewError(message) from None


def deadline_of(timeout_s: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=timeout_s)
