"""The ``dub-film`` flow: film + dubbed audio in, frame-exact dubbed film, shot list and report out.

The flow is the list of a job's stages; each is a library stage run by Prefect tasks
(:mod:`flows.stages`).  Everything is written to a staging area inside the output
location and published only when the whole job succeeded; a failed run leaves the
output as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from dubcore.manifest import DubJob
from dubcore.storage import open_storage
from lipsync.job_report import complete_report, fetched_inputs
from lipsync.media.probe import probe
from lipsync.pipeline import build_report, encode_settings
from lipsync.stagelog import StageLog
from tasks.assemble import assemble_task
from tasks.faces import faces_shot_task, write_faces_task
from tasks.ingest import fetch_inputs_task, mix_audio_task, preflight_task, resolve_job_task
from tasks.report import report_task
from tasks.shots import detect_shots_task
from tasks.speakers import speakers_enabled

from flows.stages import (
    finetune_stage, lipsync_stage, output_name, preview_stage, publish_paths, qc_stage, review_stage, speakers_stage,
)


def _with_review(job: DubJob, review_casting: bool | None) -> DubJob:
    if review_casting is None or review_casting == job.options.review_casting:
        return job
    return job.model_copy(update={"options": type(job.options).model_validate(
        {**job.options.model_dump(), "review_casting": review_casting})})


@flow(name="dub-film", log_prints=True, validate_parameters=True)
def dub_film(
    job: Annotated[DubJob | None, Field(description="The job: film, dub tracks, output and options (or give `manifest`).")] = None,
    manifest: Annotated[str | None, Field(
        description="Instead of `job`: a job manifest (YAML or JSON) on local disk or object storage, "
        "e.g. s3://bucket/jobs/film.yaml; its relative paths resolve against its own folder.")] = None,
    output: Annotated[str | None, Field(description="Output folder or URI (s3://bucket/prefix); overrides the job's `output`.")] = None,
    review_casting: Annotated[bool | None, Field(
        description="Overrides the job's options.review_casting: stop after casting and wait for an operator's approval "
        "or edits in the UI before rendering (a deployment may set it for all its runs).")] = None,
) -> dict[str, Any]:
    """Dub one film: give the job inline (`job`) or as a manifest file or URI (`manifest`).

    The output location (``job.output`` or ``output``) receives the film, the shot list,
    the reports and QC; on object storage it is published with a `_SUCCESS` object last.

    Args:
        job: The job itself: film, dub tracks, output and options (or give `manifest`).
        manifest: Instead of `job`, a job manifest (YAML or JSON) on local disk or object storage,
            e.g. s3://bucket/jobs/film.yaml; its relative paths resolve against its own folder.
        output: Output folder or URI (s3://bucket/prefix); overrides the job's `output`.
        review_casting: Overrides the job's `options.review_casting` (operator review of the casting before rendering).
    """
    logger = get_run_logger()
    scratch = Path(tempfile.mkdtemp(prefix="dub-film-"))
    staging = None
    stage = StageLog()  # times each stage; names the failing stage and its input for the CLI's one-line error
    try:
        with stage("read", "read the job", manifest or "the inline job"):
            job = _with_review(resolve_job_task(job, manifest, output, scratch / "inputs"), review_casting)
            storage = open_storage(job.output)
        with stage("fetch", "fetch inputs", job.film):
            source_job, job = job, fetch_inputs_task(job, scratch / "inputs")  # every remote input verified on disk
        fetched = source_job != job  # something was downloaded (a review's edits replace job again below)
        with stage("preflight", "preflight", job.film):
            pre = preflight_task(job, scratch)  # before anything is created at the output
            if job.options.review_casting and not pre.info.audio:
                raise ValueError(f"{pre.film}: options.review_casting: the film has no audio, so there is no casting to review "
                                 "(every face would be driven by the whole dub dialogue); set review_casting: false")
            staging = storage.stage(job.output)
        root = staging.root

        with stage("mix", "dub mix", ", ".join(str(s.path) for s in pre.stems)):
            mix = mix_audio_task(job, pre, root / "audio" / "dub_mix.wav", scratch / "stems")
        with stage("shots", "shots", pre.film):
            shots = detect_shots_task(pre.film, pre.info, job.options, root)
        with stage("faces", "faces", pre.film):
            faces = [faces_shot_task(shot, pre.film, pre.info, job.options) for shot in shots]
            write_faces_task(pre.film, shots, faces, job.options, root)

        plan = asd = audio16k = review = preview = None
        if speakers_enabled(job) and not pre.info.audio:
            logger.warning("%s has no audio: no speaker detection; every face is driven by the whole dub dialogue", pre.film)
        elif speakers_enabled(job):
            evidence: dict[str, Any] = {}
            with stage("speakers", "speakers", pre.film):
                plan, asd, audio16k = speakers_stage(job, pre, shots, faces, root, scratch, evidence)
            if job.options.review_casting:  # before fine-tuning and any rendering
                with stage("review", "review", pre.film):
                    job, plan, review, preview = review_stage(job, pre, shots, faces, plan, evidence, root, scratch)

        preview_entry = None
        if plan is not None and (review is not None or not job.options.lipsync_checkpoint):
            with stage("preview", "preview", pre.film):
                preview_entry = preview_stage(job, pre, faces, plan, root, preview)

        finetuned = None
        if job.options.finetune is not None:
            with stage("finetune", "fine-tune", pre.film):
                if pre.info.audio:
                    job, finetuned = finetune_stage(job, pre, faces, root, scratch, asd, audio16k, plan)
                else:
                    finetuned = {"status": "skipped", "reason": "the film has no audio to find its speaking faces"}
                    logger.warning("%s has no audio: fine-tuning skipped", pre.film)

        with stage("lipsync", "lip-sync", pre.film):
            renders, renders_plan, dialogue = lipsync_stage(job, pre, shots, faces, root, scratch, plan)

        out = root / output_name(job)
        settings = encode_settings(job, pre.source_info or pre.info)
        with stage("assemble", "assemble", pre.film):
            assemble_task(pre.film, pre.info, shots, _segments(renders), mix.path, out, settings, job.options.audio_codec)

        qc = None
        if job.options.runs_qc:
            with stage("qc", "qc", out.name):
                qc = qc_stage(job, pre, shots, faces, renders, plan, out, root, scratch, renders_plan, asd, audio16k, dialogue)
            if any(r.get("retry", {}).get("kept") == 2 for r in renders.values()):  # a second take replaced a segment
                with stage("assemble_retakes", "assemble", pre.film):
                    assemble_task(pre.film, pre.info, shots, _segments(renders), mix.path, out, settings, job.options.audio_codec)

        report = complete_report(build_report(job, pre, mix, shots, renders, out, probe(out), stage.timings),
                                 faces=faces, plan=plan, qc=qc, finetuned=finetuned, preview=preview_entry, review=review,
                                 has_checkpoint=bool(job.options.lipsync_checkpoint),
                                 inputs=fetched_inputs(source_job) if fetched else None)
        report_task(report, root, job.output)
        with stage("publish", "publish", job.output):
            publish_paths(root, source_job, job, plan, scratch)
            location = staging.commit()
        logger.info("published %s", location)
        return {"output": location, "film": output_name(job), "shots": len(shots), "frame_count": report["output"]["frame_count"]}
    except BaseException:
        if staging is not None:
            staging.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _segments(renders: dict[str, dict[str, Any]]) -> dict[str, Path]:
    return {sid: Path(r["segment"]) for sid, r in renders.items() if r.get("segment")}
