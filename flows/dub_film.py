"""The ``dub-film`` flow: film + dubbed audio in, frame-exact dubbed film, shot list and report out.

Stages: preflight -> dubbed mix -> shots -> faces per shot -> speakers (diarization, active
speakers, casting) -> [fine-tuning on the film's speaking faces] -> lip-sync per shot -> assemble
-> QC -> report.
Everything is written to a staging area inside the output location and published
only when the whole job succeeded; a failed run leaves the output as it was.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from dubcore.manifest import DubJob
from dubcore.storage import open_storage
from lipsync.media.probe import probe
from lipsync.pipeline import build_report, encode_settings
from tasks.assemble import assemble_task
from tasks.faces import faces_shot_task, write_faces_task
from tasks.finetune import finetune_task
from tasks.ingest import dialogue_task, fetch_inputs_task, mix_audio_task, preflight_task, resolve_job_task
from tasks.lipsync import lipsync_shots, passthrough_task
from tasks.qc import progress_update, qc_report_task, qc_shot_task, start_progress
from tasks.report import report_task
from tasks.shots import detect_shots_task
from tasks.speakers import (
    asd_task,
    cast_task,
    diarize_original_task,
    dub_voices_task,
    original_audio_task,
    speakers_enabled,
    speakers_summary,
)


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


def lipsync_stage(job: DubJob, pre, shots, faces, root: Path, scratch: Path, plan=None, jobs_out: list | None = None) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Shots with a face to re-voice go to the Wav2Lip workers; the others (or all, without a checkpoint) pass through.

    With a speaker plan, each face is driven by its dubbed voice where it speaks and
    faces that do not speak are left alone; without one (``options.speakers: off``)
    every face track of a shot is driven by the whole dub dialogue."""
    renders: dict[str, dict[str, Any]] = {}
    if not job.options.lipsync_checkpoint:
        for shot in shots:
            renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, "lip-sync not requested (options.lipsync_checkpoint is unset)")
        return renders
    from lipsync.media.assemble import resolve_settings
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync.render import ShotJob
    from lipsync.speakers.stage import SAMPLE_RATE

    video = pre.info.require_video()
    # Segments are encoded as the film is delivered, so assembly copies them without decoding them again.
    delivery = resolve_settings(encode_settings(job, pre.source_info or pre.info), video, "." + output_name(job).rsplit(".", 1)[-1])
    jobs = []
    if plan is not None:
        if Wav2Lip.contract.sample_rate != SAMPLE_RATE:  # the voices were prepared at the speaker stage's rate
            raise RuntimeError(f"Wav2Lip needs {Wav2Lip.contract.sample_rate} Hz audio, the voices are at {SAMPLE_RATE} Hz")
        for shot, tracking in zip(shots, faces):
            drives = {d.track_id: d for d in plan.drives_in(shot.id)}
            if not drives:
                why = "no face in this shot" if not tracking.tracks else "no face in this shot speaks a dubbed voice"
                renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, why)
                continue
            (root / "shots" / shot.id).mkdir(parents=True, exist_ok=True)
            (scratch / "shots" / shot.id).mkdir(parents=True, exist_ok=True)  # segments: working files, not published
            driven = tuple(t for t in tracking.tracks if t.id in drives)
            first = drives[driven[0].id]
            jobs.append(ShotJob(str(pre.film), video.fps, shot.frames, driven, first.audio,
                                str(scratch / "shots" / shot.id / "segment.mkv"),
                                track_audio={tid: d.audio for tid, d in drives.items()},
                                speaking={tid: d.speaking for tid, d in drives.items()}, shot_id=shot.id,
                                settings=delivery, info=pre.info))
        renders.update(lipsync_shots(jobs, {s.id: s for s in shots}, job.options, root / "shots"))
        if jobs_out is not None:
            jobs_out.extend(jobs)
        return renders
    dialogue = dialogue_task(job, pre, scratch / "dialogue_16k.wav", scratch / "dialogue_stems")
    for shot, tracking in zip(shots, faces):
        if not tracking.tracks:
            renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, "no face to lip-sync in this shot")
            continue
        (root / "shots" / shot.id).mkdir(parents=True, exist_ok=True)
        (scratch / "shots" / shot.id).mkdir(parents=True, exist_ok=True)
        jobs.append(ShotJob(str(pre.film), video.fps, shot.frames, tracking.tracks, str(dialogue.path),
                            str(scratch / "shots" / shot.id / "segment.mkv"), shot_id=shot.id, settings=delivery, info=pre.info))
    renders.update(lipsync_shots(jobs, {s.id: s for s in shots}, job.options, root / "shots"))
    if jobs_out is not None:
        jobs_out.extend(jobs)
    return renders


def qc_location(job: DubJob) -> str:
    """Where the HTML QC report will be once the run is published (a URL for the link artifact)."""
    out = str(job.output)
    if "://" in out:
        return out.rstrip("/") + "/qc/report.html"
    return (Path(out).resolve() / "qc" / "report.html").as_uri()


def qc_stage(job: DubJob, pre, shots, faces, renders, plan, film: Path, root: Path, scratch: Path, shot_jobs=(), asd=None):  # type: ignore[no-untyped-def]
    """Measure every re-voiced face of the delivered film, shot by shot; qc/ reports and artifacts.

    With the speaker plan and the original's active-speaker result (``asd``), the casting is checked too
    (:mod:`lipsync.qc.casting`): a face that speaks in the original but was not re-voiced, or a re-voiced
    face that never speaks there, makes its shot at least *review*."""
    import dataclasses

    import numpy as np

    from lipsync.qc.casting import casting_by_shot
    from lipsync.qc.report import QCReport, with_casting
    from lipsync.qc.shots import array_source, wav_source
    from lipsync.speakers import stage
    from tasks.qc import load_qc_models, thresholds_of
    from tasks.faces import _device

    video = pre.info.require_video()
    fps = video.fps
    out_info = probe(film)
    if plan is not None:
        voices = {d.track_id: d.voice for d in plan.drives}
        voice_audio = {v.name: wav_source(v.audio, fps) for v in plan.voices}
    else:
        voices = {}
        dialogue = scratch / "dialogue_16k.wav"
        if not dialogue.exists():  # QC asked for without lip-sync: the dialogue was not prepared yet
            dialogue_task(job, pre, dialogue, scratch / "dialogue_stems")
        voice_audio = {"": wav_source(dialogue, fps)}
    original = None
    if pre.info.audio:  # the speaker stage's 16 kHz memory map when it ran, else decoded now
        raw = scratch / "original_16k.f32"
        audio = np.memmap(raw, dtype="<f4", mode="r") if raw.exists() and raw.stat().st_size else stage.original_audio(pre.film, scratch)
        original = array_source(audio, fps)
    _, notes = load_qc_models(job.options.qc_syncnet_weights, job.options.asd_weights, _device(job.options.lipsync_device))
    progress = start_progress(len(shots))
    results = []
    for i, (shot, tracking) in enumerate(zip(shots, faces)):
        render = renders.get(shot.id, {"status": "unchanged", "reason": "not rendered"})
        results.append(qc_shot_task(shot, render, tracking.tracks, voices, pre.film, film, original, voice_audio,
                                    job.options, fps, pre.info, out_info))
        progress_update(progress, i + 1, len(shots))
    models, _ = load_qc_models(job.options.qc_syncnet_weights, job.options.asd_weights, _device(job.options.lipsync_device))
    report = QCReport(job.title or pre.film.stem, pre.film.name, str(fps), thresholds_of(job.options), tuple(results),
                      {**models.signals(), "notes": list(notes)})
    if job.options.qc_retry.enabled:
        report = retry_stage(job, pre, shots, faces, renders, report, shot_jobs, voices, original, voice_audio, fps, root)
    if plan is not None:  # the casting, checked after the retries: a second take cannot change it
        checks = casting_by_shot(faces, asd, plan.drives)
        extra = [] if asd is not None else ["casting not checked: no active-speaker result of the original"]
        if not plan.drives and any(f.tracks for f in faces):
            extra.append("no face was re-voiced in this job: every dubbed voice was left off screen")
        report = dataclasses.replace(report, shots=tuple(with_casting(s, checks.get(s.shot_id, ())) for s in report.shots),
                                     signals={**report.signals, "notes": [*report.signals.get("notes", []), *extra]})
    qc_report_task(report, root / "qc", qc_location(job))
    return report


def retry_stage(job: DubJob, pre, shots, faces, renders, report, shot_jobs, voices, original, voice_audio, fps, root: Path):  # type: ignore[no-untyped-def]
    """Second takes of the shots whose verdict is in ``options.qc_retry.on``: re-rendered with the retry's
    crop / blend / batch parameters, measured on their lossless segment, and kept when better
    (:func:`lipsync.qc.shots.take_score`).  Updates ``renders`` in place; returns the QC report with the
    kept takes' measurements."""
    import dataclasses

    from dubcore.schema import write_json
    from lipsync.render.params import LipSyncParams
    from lipsync.qc.shots import take_score

    logger = get_run_logger()
    r = job.options.qc_retry
    base = LipSyncParams()
    params = LipSyncParams(crop=dataclasses.replace(base.crop, top=r.crop_top, bottom=r.crop_bottom),
                           blend=dataclasses.replace(base.blend, feather=r.feather), batch_size=r.batch_size or job.options.lipsync_batch_size)
    by_shot = {j.shot_id: j for j in shot_jobs}
    first = {s.shot_id: s for s in report.shots}
    todo = [s for s in report.shots if s.status == "rendered" and s.verdict in r.on and s.shot_id in by_shot]
    if not todo:
        return report
    takes = [dataclasses.replace(by_shot[s.shot_id], out=str(Path(by_shot[s.shot_id].out).with_name("segment.take2.mkv")), params=params)
             for s in todo]
    second = lipsync_shots(takes, {s.id: s for s in shots}, job.options, root / "shots")
    shot_of = {s.id: s for s in shots}
    tracks_of = {f.shot_id: f.tracks for f in faces}
    kept = dict(first)
    for s in todo:
        sid = s.shot_id
        take = second[sid]
        segment = Path(take["segment"])
        reference = {t.track_id: t.reference for t in s.tracks}
        measured = qc_shot_task(shot_of[sid], take, tracks_of[sid], voices, pre.film, segment, original, voice_audio,
                                job.options, fps, pre.info, probe(segment), shot_of[sid].frames.start, reference)
        a, b = take_score(s), take_score(measured)
        better = b > a
        logger.info("%s: take 1 %s %s, take 2 %s %s: keeping take %d", sid, s.verdict, a, measured.verdict, b, 2 if better else 1)
        note = {"takes": [{"take": 1, "verdict": s.verdict, "score": list(a)}, {"take": 2, "verdict": measured.verdict, "score": list(b),
                                                                 "params": {"crop_top": r.crop_top, "crop_bottom": r.crop_bottom,
                                                                            "feather": r.feather}}],
                "kept": 2 if better else 1}
        if better:  # the kept take's segment stays where it is (the render cache's copy, or the working folder)
            renders[sid] = {**take, "retry": note}
            kept[sid] = dataclasses.replace(measured, thumbnails=s.thumbnails | {"after": measured.thumbnails.get("after", "")})
        else:
            if not job.options.cache:  # a working file; a cached take stays in the cache
                segment.unlink(missing_ok=True)
            renders[sid] = {**renders[sid], "retry": note}
        write_json(root / "shots" / sid / "shot.json", "report", {"shot": shot_of[sid].to_dict(), "render": renders[sid]})
    from lipsync.qc.report import QCReport

    return QCReport(report.title, report.film, report.fps, report.thresholds, tuple(kept[s.shot_id] for s in report.shots),
                    {**report.signals, "retried": [s.shot_id for s in todo]})


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
    at: tuple[str, Any] = ("read the job", manifest or "the inline job")  # the stage running, and its input (for errors)
    try:
        job = resolve_job_task(job, manifest, output, scratch / "inputs")
        if review_casting is not None and review_casting != job.options.review_casting:
            job = job.model_copy(update={"options": type(job.options).model_validate(
                {**job.options.model_dump(), "review_casting": review_casting})})
        timings: dict[str, float] = {}
        storage = open_storage(job.output)
        t0 = time.perf_counter()
        at = ("fetch inputs", job.film)
        source_job, job = job, fetch_inputs_task(job, scratch / "inputs")  # every remote input verified on disk
        fetched = source_job != job  # something was downloaded (job is replaced again below when a review edits the casting)
        timings["fetch"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        at = ("preflight", job.film)
        pre = preflight_task(job, scratch)  # before anything is created at the output
        timings["preflight"] = time.perf_counter() - t0
        if job.options.review_casting and not pre.info.audio:
            raise ValueError(f"{pre.film}: options.review_casting: the film has no audio, so there is no casting to review "
                             "(every face would be driven by the whole dub dialogue); set review_casting: false")
        staging = storage.stage(job.output)
        root = staging.root

        t0 = time.perf_counter()
        at = ("dub mix", ", ".join(str(s.path) for s in pre.stems))
        mix = mix_audio_task(job, pre, root / "audio" / "dub_mix.wav", scratch / "stems")
        timings["mix"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        at = ("shots", pre.film)
        shots = detect_shots_task(pre.film, pre.info, job.options, root)
        timings["shots"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        at = ("faces", pre.film)
        faces = [faces_shot_task(shot, pre.film, pre.info, job.options) for shot in shots]
        write_faces_task(pre.film, shots, faces, job.options, root)
        timings["faces"] = time.perf_counter() - t0

        plan = asd = audio16k = None
        review = preview = None
        if speakers_enabled(job):
            if pre.info.audio:
                t0 = time.perf_counter()
                evidence: dict[str, Any] = {}
                at = ("speakers", pre.film)
                plan, asd, audio16k = speakers_stage(job, pre, shots, faces, root, scratch, evidence)
                timings["speakers"] = time.perf_counter() - t0
                if job.options.review_casting:  # before fine-tuning and any rendering
                    t0 = time.perf_counter()
                    job, plan, review, preview = review_stage(job, pre, shots, faces, plan, evidence, root, scratch)
                    timings["review"] = time.perf_counter() - t0
            else:
                logger.warning("%s has no audio: no speaker detection; every face is driven by the whole dub dialogue", pre.film)

        preview_entry = None
        if plan is not None and (review is not None or not job.options.lipsync_checkpoint):
            # The casting preview ships with the film: what was approved, or (without weights) what would be re-voiced.
            from tasks.review import NO_WEIGHTS_NOTE, preview_task

            t0 = time.perf_counter()
            if preview is not None:
                shutil.copyfile(preview, root / "preview.mp4")
            else:
                preview_task(pre.film, pre.info, [t for r in faces for t in r.tracks], plan.to_dict(), root / "preview.mp4")
            preview_entry = {"file": "preview.mp4",
                             "note": NO_WEIGHTS_NOTE if not job.options.lipsync_checkpoint else "casting preview of the approved casting"}
            timings["preview"] = time.perf_counter() - t0

        finetuned = None
        if job.options.finetune is not None:
            t0 = time.perf_counter()
            if pre.info.audio:
                job, finetuned = finetune_stage(job, pre, faces, root, scratch, asd, audio16k, plan)
            else:
                finetuned = {"status": "skipped", "reason": "the film has no audio to find its speaking faces"}
                logger.warning("%s has no audio: fine-tuning skipped", pre.film)
            timings["finetune"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        shot_jobs: list = []
        at = ("lip-sync", pre.film)
        renders = lipsync_stage(job, pre, shots, faces, root, scratch, plan, shot_jobs)
        segments = {sid: Path(r["segment"]) for sid, r in renders.items() if r.get("segment")}
        timings["lipsync"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = root / output_name(job)
        at = ("assemble", pre.film)
        assemble_task(pre.film, pre.info, shots, segments, mix.path, out, encode_settings(job, pre.source_info or pre.info), job.options.audio_codec)
        timings["assemble"] = time.perf_counter() - t0

        qc = None
        if job.options.runs_qc:
            t0 = time.perf_counter()
            at = ("qc", out.name)
            qc = qc_stage(job, pre, shots, faces, renders, plan, out, root, scratch, shot_jobs, asd=asd)
            timings["qc"] = time.perf_counter() - t0
            if any(r.get("retry", {}).get("kept") == 2 for r in renders.values()):  # a second take replaced a segment
                t0 = time.perf_counter()
                segments = {sid: Path(r["segment"]) for sid, r in renders.items() if r.get("segment")}
                assemble_task(pre.film, pre.info, shots, segments, mix.path, out, encode_settings(job, pre.source_info or pre.info), job.options.audio_codec)
                timings["assemble_retakes"] = time.perf_counter() - t0

        report = build_report(job, pre, mix, shots, renders, out, probe(out), timings)
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
            report["speakers"] = {"status": "not run", "reason": "options.speakers is off, or lip-sync is not requested, or the film has no audio"}
        if finetuned is not None:
            report["finetune"] = finetuned
        if preview_entry is not None:
            report["preview"] = preview_entry
            if not job.options.lipsync_checkpoint:
                report["notes"] = [*report.get("notes", []), preview_entry["note"]]
        report["review"] = review if review is not None else {"status": "not requested", "reason": "options.review_casting is off"}
        report["transcription"] = {"status": "not run", "reason": "WhisperX transcription and word timing are not part of this version"}
        if fetched:
            report["inputs"] = {"film": source_job.film, "dub": source_job.dub.model_dump(mode="json", exclude_none=True),
                                "fetched": "downloaded and verified (size and checksum) before the run"}
        report_task(report, root, job.output)
        at = ("publish", job.output)
        publish_paths(root, source_job, job, plan, scratch)
        location = staging.commit()
        logger.info("published %s", location)
        return {"output": location, "film": output_name(job), "shots": len(shots), "frame_count": report["output"]["frame_count"]}
    except BaseException as exc:
        if isinstance(exc, Exception) and not getattr(exc, "dub_stage", None):
            try:  # the CLI's one-line error names the stage and its input
                exc.dub_stage, exc.dub_input = at[0], str(at[1])
            except AttributeError:
                pass
        if staging is not None:
            staging.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
