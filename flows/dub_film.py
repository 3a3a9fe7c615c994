"""The ``dub-film`` flow: film + dubbed audio in, frame-exact dubbed film, shot list and report out.

Stages: preflight -> dubbed mix -> shots -> faces per shot -> speakers (diarization, active
speakers, casting) -> lip-sync per shot -> assemble -> report.
Everything is written to a staging area inside the output location and published
only when the whole job succeeded; a failed run leaves the output as it was.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from dubcore.manifest import DubJob
from dubcore.storage import open_storage
from lipsync.media.probe import probe
from lipsync.pipeline import build_report, encode_settings
from tasks.assemble import assemble_task
from tasks.faces import faces_shot_task, write_faces_task
from tasks.ingest import dialogue_task, mix_audio_task, preflight_task
from tasks.lipsync import lipsync_shots_task, passthrough_task
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


def output_name(job: DubJob) -> str:
    return f"film.dubbed.{job.options.container}"


def speakers_stage(job: DubJob, pre, shots, faces, root: Path, scratch: Path):  # type: ignore[no-untyped-def]
    """Diarize the original and the dub, score every face track, cast: a SpeakerPlan (speakers.json)."""
    tracks = [t for r in faces for t in r.tracks]
    audio = original_audio_task(pre.film, scratch)
    diarization = diarize_original_task(audio, job, pre.film.stem, root)
    voices = dub_voices_task(job, pre, scratch, root)
    asd = asd_task(pre.film, pre.info, tracks, audio, job, root)
    return cast_task(shots, tracks, asd, diarization, voices, job, pre.info, root)


def lipsync_stage(job: DubJob, pre, shots, faces, root: Path, scratch: Path, plan=None) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Shots with a face to re-voice go to the Wav2Lip workers; the others (or all, without a checkpoint) pass through.

    With a speaker plan, each face is driven by its dubbed voice where it speaks and
    faces that do not speak are left alone; without one (``options.speakers: off``)
    every face track of a shot is driven by the whole dub dialogue."""
    renders: dict[str, dict[str, Any]] = {}
    if not job.options.lipsync_checkpoint:
        for shot in shots:
            renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, "lip-sync not requested (options.lipsync_checkpoint is unset)")
        return renders
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync.render import ShotJob
    from lipsync.speakers.stage import SAMPLE_RATE

    video = pre.info.require_video()
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
            driven = tuple(t for t in tracking.tracks if t.id in drives)
            first = drives[driven[0].id]
            jobs.append(ShotJob(str(pre.film), video.fps, shot.frames, driven, first.audio,
                                str(root / "shots" / shot.id / "segment.mkv"),
                                track_audio={tid: d.audio for tid, d in drives.items()},
                                speaking={tid: d.speaking for tid, d in drives.items()}, shot_id=shot.id))
        renders.update(lipsync_shots_task(jobs, {s.id: s for s in shots}, job.options, root / "shots"))
        return renders
    dialogue = dialogue_task(job, pre, scratch / "dialogue_16k.wav", scratch / "dialogue_stems")
    for shot, tracking in zip(shots, faces):
        if not tracking.tracks:
            renders[shot.id] = passthrough_task(shot, root / "shots" / shot.id, "no face to lip-sync in this shot")
            continue
        (root / "shots" / shot.id).mkdir(parents=True, exist_ok=True)
        jobs.append(ShotJob(str(pre.film), video.fps, shot.frames, tracking.tracks, str(dialogue.path),
                            str(root / "shots" / shot.id / "segment.mkv"), shot_id=shot.id))
    renders.update(lipsync_shots_task(jobs, {s.id: s for s in shots}, job.options, root / "shots"))
    return renders


@flow(name="dub-film", log_prints=True, validate_parameters=True)
def dub_film(job: DubJob) -> dict[str, Any]:
    """Dub one film.  ``job.output`` is the output location (a folder)."""
    logger = get_run_logger()
    if not job.output:
        raise ValueError("job.output is not set: give the output folder in the manifest or with `dub run --out DIR`")
    timings: dict[str, float] = {}
    storage = open_storage(job.output)
    scratch = Path(tempfile.mkdtemp(prefix="dub-film-"))
    staging = None
    try:
        t0 = time.perf_counter()
        pre = preflight_task(job, scratch)  # before anything is created at the output
        timings["preflight"] = time.perf_counter() - t0
        staging = storage.stage(job.output)
        root = staging.root

        t0 = time.perf_counter()
        mix = mix_audio_task(job, pre, root / "audio" / "dub_mix.wav", scratch / "stems")
        timings["mix"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        shots = detect_shots_task(pre.film, pre.info, job.options, root)
        timings["shots"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        faces = [faces_shot_task(shot, pre.film, pre.info, job.options) for shot in shots]
        write_faces_task(pre.film, shots, faces, job.options, root)
        timings["faces"] = time.perf_counter() - t0

        plan = None
        if speakers_enabled(job):
            if pre.info.audio:
                t0 = time.perf_counter()
                plan = speakers_stage(job, pre, shots, faces, root, scratch)
                timings["speakers"] = time.perf_counter() - t0
            else:
                logger.warning("%s has no audio: no speaker detection; every face is driven by the whole dub dialogue", pre.film)

        t0 = time.perf_counter()
        renders = lipsync_stage(job, pre, shots, faces, root, scratch, plan)
        segments = {sid: Path(r["segment"]) for sid, r in renders.items() if r.get("segment")}
        timings["lipsync"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = root / output_name(job)
        assemble_task(pre.film, pre.info, shots, segments, mix.path, out, encode_settings(job), job.options.audio_codec)
        timings["assemble"] = time.perf_counter() - t0

        report = build_report(job, pre, mix, shots, renders, out, probe(out), timings)
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
        report["transcription"] = {"status": "not run", "reason": "WhisperX transcription and word timing are not part of this version"}
        report_task(report, root, job.output)
        location = staging.commit()
        logger.info("published %s", location)
        return {"output": location, "film": output_name(job), "shots": len(shots), "frame_count": report["output"]["frame_count"]}
    except BaseException:
        if staging is not None:
            staging.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
