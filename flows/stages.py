"""The stages of the ``dub-film`` flow: each maps a library stage onto Prefect tasks.

Decisions live in the library (:func:`lipsync.render.plan.plan_renders` builds the
render jobs, :func:`lipsync.render.plan.second_takes` / :func:`~lipsync.render.plan.keep_take`
decide QC retries, :func:`lipsync.qc.shots.qc_audio` what QC listens to,
:func:`lipsync.qc.casting.check_casting` the casting checks,
:func:`lipsync.job_report.complete_report` the report); these functions only call
the tasks that run them (caching, retries, artifacts, pauses) in order.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from dubcore.manifest import DubJob
from lipsync.media.probe import probe
from tasks.finetune import finetune_task
from tasks.ingest import dialogue_task
from tasks.lipsync import lipsync_shots, passthrough_task, write_shot_json
from tasks.qc import load_qc_models, progress_update, qc_report_task, qc_shot_task, start_progress, thresholds_of
from tasks.speakers import asd_task, cast_task, diarize_original_task, dub_voices_task, original_audio_task


def publish_paths(root: Path, source_job: DubJob, job: DubJob, plan, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    """No published JSON points outside the output (:func:`lipsync.publish.make_portable`): inputs by the
    names the job gave them, voices by the dub track they were made from, working files not at all."""
    from lipsync.render.cache import default_cache_dir
    from lipsync.publish import make_portable

    replace: dict[str, str] = {}
    pairs = [(job.film, source_job.film), (job.dub.dialogue, source_job.dub.dialogue), (job.dub.me, source_job.dub.me),
             (job.dub.mix, source_job.dub.mix)]
    pairs += [(a.path, b.path) for a, b in zip(job.dub.characters, source_job.dub.characters)]
    replace.update({str(a): str(b) for a, b in pairs if a and b and str(a) != str(b)})
    if plan is not None:
        stems = {c.name: str(c.path) for c in source_job.dub.characters}
        dialogue = source_job.dub.dialogue or source_job.dub.mix
        for v in plan.voices:
            made_from = stems.get(v.name) if v.source == "stem" else dialogue
            if made_from:
                replace[str(v.audio)] = str(made_from)
    o = job.options
    cache = Path(o.cache_dir).expanduser() if o.cache_dir else default_cache_dir()
    make_portable(root, replace, private=[scratch, cache])


def output_name(job: DubJob) -> str:
    return f"film.dubbed.{job.options.container}"


def speakers_stage(job: DubJob, pre, shots, faces, root: Path, scratch: Path, evidence: dict | None = None):  # type: ignore[no-untyped-def]
    """Diarize the original and the dub, score every face track, cast: a SpeakerPlan (speakers.json),
    with the active-speaker result and the 16 kHz soundtrack it was computed from.

    ``evidence`` (a dict) is filled with the diarization, voices, ASD and audio on the first call;
    a later call with the same dict (casting again after an operator's review) only casts."""
    ev = evidence if evidence is not None else {}
    if not ev:
        tracks = [t for r in faces for t in r.tracks]
        audio = original_audio_task(pre.film, scratch)
        diarization = diarize_original_task(audio, job, pre.film.stem, root)
        voices = dub_voices_task(job, pre, scratch, root)
        asd = asd_task(pre.film, pre.info, tracks, audio, job, root)
        ev.update(tracks=tracks, audio=audio, diarization=diarization, voices=voices, asd=asd)
    tracks, audio, diarization, voices, asd = ev["tracks"], ev["audio"], ev["diarization"], ev["voices"], ev["asd"]
    quality = {tid: q for r in faces for tid, q in getattr(r, "quality", {}).items()}
    return cast_task(shots, tracks, asd, diarization, voices, job, pre.info, root, quality), asd, audio


def review_stage(job: DubJob, pre, shots, faces, plan, evidence: dict, root: Path, scratch: Path):  # type: ignore[no-untyped-def]
    """``options.review_casting``: show the casting (artifacts, preview, review folder), wait for the operator
    (suspended from a deployment, paused in-process), cast again with their edits.  Before anything is
    rendered.  Returns (the job with the approved casting, its plan, the report's ``review`` entry, the
    preview of that plan if this execution rendered it)."""
    from lipsync.preview import CastingView
    from lipsync.speakers.plan import CastingError
    from tasks import review as rv

    logger = get_run_logger()
    tracks = [t for r in faces for t in r.tracks]
    run_id = rv.flow_run_id()
    timeout = job.options.review_timeout_s
    where = rv.review_folder_uri(job, run_id)
    speakers = sorted({t.speaker for t in plan.turns})
    title = job.title or pre.film.stem
    rounds: list[dict[str, Any]] = []
    error = None
    round_ = 1
    while True:
        key = rv.review_key(round_)
        preview = None
        digest = rv.plan_digest(plan.to_dict())
        if rv.already_answered(key):  # a resumed (suspended) run going through again: the answer is stored
            shown = rv.shown_digest(key)
            if shown is not None and shown != digest:  # computed again, the casting came out otherwise: ask again
                error = (f"the casting computed again when the run resumed differs from the one reviewed in round {round_}; "
                         "that answer was not applied: review this one")
                logger.warning("review round %d: %s", round_, error)
                round_ += 1
                continue
            description = f"Casting review {round_} of {title} (answered)"
        else:
            folder = scratch / "review" / str(round_)
            (folder / "thumbnails").mkdir(parents=True, exist_ok=True)
            plan_dict = plan.to_dict()
            result = rv.preview_task(pre.film, pre.info, tracks, plan_dict, folder / "preview.mp4")
            preview = result.path
            plan.write(folder / "speakers.json")
            files = {"preview.mp4": folder / "preview.mp4", "speakers.json": folder / "speakers.json"}
            for tid, jpeg in result.thumbnails.items():
                thumb = folder / "thumbnails" / (tid.replace("/", "_") + ".jpg")
                thumb.write_bytes(jpeg)
                files[f"thumbnails/{thumb.name}"] = thumb
            published = rv.publish_review_folder_task(job, run_id, files)
            view = CastingView.from_plan_dict(plan_dict, [t.id for t in tracks])
            md = rv.review_markdown(view, result.thumbnails, published, title=title, timeout_s=timeout,
                                    deadline=rv.deadline_of(timeout), speakers=speakers, error=error)
            rv.publish_review_artifacts(md, view, published.get("preview.mp4"))
            rv.save_shown_digest(key, digest)
            driven = sum(1 for t in view.tracks.values() if t.driven)
            description = (f"**Casting review of {title}**: {driven} of {len(view.tracks)} face(s) driven by "
                           f"{len(view.voices)} voice(s); original speakers {', '.join(speakers) or '(none)'}. "
                           f"See the artifact `{rv.REVIEW_ARTIFACT}` and the preview {published.get('preview.mp4', '')}."
                           + (f"\n\n**The last answer was refused:** {error}" if error else ""))
        answer = rv.wait_for_review(rv.form_for(job.casting, description), key, timeout, where)
        rounds.append({"round": round_, "approve": answer.approve, "voices": dict(answer.voices),
                       "tracks": dict(answer.tracks), "comment": answer.comment})
        if not answer.approve:
            raise rv.ReviewError(
                f"casting rejected by the operator (review round {round_}" + (f": {answer.comment}" if answer.comment else "")
                + f"): nothing rendered, nothing published; fix `casting:` in the manifest (the plan shown is in {where}) "
                "and run again")
        casting = rv.merged_casting(job.casting, answer)
        if casting == job.casting:
            logger.info("casting approved as shown (review round %d)", round_)
            break
        edited = job.model_copy(update={"casting": casting})
        try:
            plan = speakers_stage(edited, pre, shots, faces, root, scratch, evidence)[0]
        except CastingError as exc:  # an unknown id: ask again, with the error on top
            error = str(exc)
            logger.warning("review round %d: %s; asking again", round_, error)
            round_ += 1
            continue
        logger.info("casting edited by the operator (review round %d): voices %s, tracks %s", round_, answer.voices, answer.tracks)
        job, preview = edited, None
        break
    summary = {"status": "approved", "rounds": rounds, "folder": where, "casting": job.casting.model_dump(mode="json"),
               "edited": any(r["voices"] or r["tracks"] for r in rounds)}
    return job, plan, summary, preview


def finetune_stage(job: DubJob, pre, faces, root: Path, scratch: Path, asd=None, audio=None, plan=None):  # type: ignore[no-untyped-def]
    """``options.finetune``: the generator tuned on the film's speaking faces; returns (job using it, summary)."""
    tracks = [t for r in faces for t in r.tracks]
    if audio is None:
        audio = original_audio_task(pre.film, scratch)
    if asd is None:
        asd = asd_task(pre.film, pre.info, tracks, audio, job, root)
    characters = {d.track_id: d.voice for d in plan.drives} if plan is not None else None
    return finetune_task(job, pre, tracks, asd, audio, root, scratch, characters)


def lipsync_stage(job: DubJob, pre, shots, faces, root: Path, scratch: Path, plan=None):  # type: ignore[no-untyped-def]
    """Shots with a face to re-voice go to the lip-sync workers (:func:`lipsync.render.plan.plan_renders`),
    the others pass through.  Returns (per-shot render summaries, the render plan or ``None`` without
    weights, the 16 kHz dub dialogue when it was prepared)."""
    from lipsync.media.assemble import resolve_settings
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync.pipeline import encode_settings
    from lipsync.render.plan import NO_WEIGHTS, plan_renders

    if not job.options.lipsync_checkpoint:
        return {shot.id: passthrough_task(shot, root / "shots" / shot.id, NO_WEIGHTS) for shot in shots}, None, None
    video = pre.info.require_video()
    # Segments are encoded as the film is delivered, so assembly copies them without decoding them again.
    delivery = resolve_settings(encode_settings(job, pre.source_info or pre.info), video, "." + job.options.container)
    dialogue = None
    if plan is None:  # no casting: every face is driven by the whole dub dialogue
        dialogue = dialogue_task(job, pre, scratch / "dialogue_16k.wav", scratch / "dialogue_stems").path
    renders_plan = plan_renders(shots, faces, pre.film, pre.info, scratch, plan=plan, dialogue=dialogue, settings=delivery,
                                sample_rate=Wav2Lip.contract.sample_rate)
    renders: dict[str, dict[str, Any]] = {}
    for shot in shots:
        if shot.id in renders_plan.unchanged:
            renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, renders_plan.unchanged[shot.id])
    renders.update(lipsync_shots(list(renders_plan.jobs), {s.id: s for s in shots}, job.options, root / "shots"))
    return renders, renders_plan, dialogue


def preview_stage(job: DubJob, pre, faces, plan, root: Path, preview: Path | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The casting preview shipped with the film: the approved one, or (without weights) what would be re-voiced."""
    from tasks.review import NO_WEIGHTS_NOTE, preview_task

    if preview is not None:
        shutil.copyfile(preview, root / "preview.mp4")
    else:
        preview_task(pre.film, pre.info, [t for r in faces for t in r.tracks], plan.to_dict(), root / "preview.mp4")
    return {"file": "preview.mp4",
            "note": NO_WEIGHTS_NOTE if not job.options.lipsync_checkpoint else "casting preview of the approved casting"}


def qc_location(job: DubJob) -> str:
    """Where the HTML QC report will be once the run is published (a URL for the link artifact)."""
    out = str(job.output)
    if "://" in out:
        return out.rstrip("/") + "/qc/report.html"
    return (Path(out).resolve() / "qc" / "report.html").as_uri()


def qc_stage(job: DubJob, pre, shots, faces, renders, plan, film: Path, root: Path, scratch: Path,  # type: ignore[no-untyped-def]
             renders_plan=None, asd=None, audio16k=None, dialogue=None):
    """Measure every re-voiced face of the delivered film, shot by shot (second takes where asked, the
    casting checked); qc/ reports and artifacts."""
    from lipsync.device import resolve_device
    from lipsync.qc.casting import check_casting
    from lipsync.qc.report import QCReport
    from lipsync.qc.shots import qc_audio

    fps = pre.info.require_video().fps
    out_info = probe(film)
    if plan is None and dialogue is None:  # QC asked for without lip-sync: the dialogue was not prepared yet
        dialogue = dialogue_task(job, pre, scratch / "dialogue_16k.wav", scratch / "dialogue_stems").path
    if pre.info.audio and audio16k is None:
        audio16k = original_audio_task(pre.film, scratch)
    voices, voice_audio, original = qc_audio(plan, fps, dialogue, audio16k if pre.info.audio else None)
    models, notes = load_qc_models(job.options.qc_syncnet_weights, job.options.asd_weights, resolve_device(job.options.lipsync_device))
    progress = start_progress(len(shots))
    results = []
    for i, (shot, tracking) in enumerate(zip(shots, faces)):
        render = renders.get(shot.id, {"status": "unchanged", "reason": "not rendered"})
        results.append(qc_shot_task(shot, render, tracking.tracks, voices, pre.film, film, original, voice_audio,
                                    job.options, fps, pre.info, out_info))
        progress_update(progress, i + 1, len(shots))
    report = QCReport(job.title or pre.film.stem, pre.film.name, str(fps), thresholds_of(job.options), tuple(results),
                      {**models.signals(), "notes": list(notes)})
    if job.options.qc_retry.enabled and renders_plan is not None:
        report = retry_stage(job, pre, shots, faces, renders, report, renders_plan, voices, original, voice_audio, root)
    if plan is not None:  # the casting, checked after the retries: a second take cannot change it
        report = check_casting(report, faces, asd, plan)
    qc_report_task(report, root / "qc", qc_location(job))
    return report


def retry_stage(job: DubJob, pre, shots, faces, renders, report, renders_plan, voices, original, voice_audio, root: Path):  # type: ignore[no-untyped-def]
    """Second takes (:func:`lipsync.render.plan.second_takes`), rendered, measured on their segment and kept
    when better (:func:`lipsync.render.plan.keep_take`).  Updates ``renders`` in place; returns the QC report
    with the kept takes' measurements."""
    from lipsync.render.plan import keep_take, second_takes

    logger = get_run_logger()
    retry = job.options.qc_retry
    takes = second_takes(report, renders_plan.jobs, retry, job.options.lipsync_batch_size)
    if not takes:
        return report
    fps = pre.info.require_video().fps
    second = lipsync_shots([t for _, t in takes], {s.id: s for s in shots}, job.options, root / "shots")
    shot_of = {s.id: s for s in shots}
    tracks_of = {f.shot_id: f.tracks for f in faces}
    kept = {s.shot_id: s for s in report.shots}
    for first, _ in takes:
        sid = first.shot_id
        take = second[sid]
        segment = Path(take["segment"])
        reference = {t.track_id: t.reference for t in first.tracks}
        measured = qc_shot_task(shot_of[sid], take, tracks_of[sid], voices, pre.film, segment, original, voice_audio,
                                job.options, fps, pre.info, probe(segment), shot_of[sid].frames.start, reference)
        better, note = keep_take(first, measured, retry)
        logger.info("%s: take 1 %s, take 2 %s: keeping take %d", sid, first.verdict, measured.verdict, note["kept"])
        if better:  # the kept take's segment stays where it is (the render cache's copy, or the working folder)
            renders[sid] = {**take, "retry": note}
            kept[sid] = dataclasses.replace(measured, thumbnails=first.thumbnails | {"after": measured.thumbnails.get("after", "")})
        else:
            if not job.options.cache:  # a working file; a cached take stays in the cache
                segment.unlink(missing_ok=True)
            renders[sid] = {**renders[sid], "retry": note}
        write_shot_json(root / "shots", shot_of[sid], renders[sid])
    return dataclasses.replace(report, shots=tuple(kept[s.shot_id] for s in report.shots),
                               signals={**report.signals, "retried": [first.shot_id for first, _ in takes]})
