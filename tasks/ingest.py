"""Ingest: check every input before work starts, conform VFR if asked, build the dubbed mix."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.inputs import check_output, fetch_inputs
from dubcore.manifest import DubJob, load_manifest_uri
from lipsync.media.audio import MixResult
from lipsync.media.probe import probe
from lipsync.pipeline import Preflight, conform_vfr, preflight, prepare_audio, prepare_dialogue

from .retry import transient


@task(name="resolve-job", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient)
def resolve_job_task(job: DubJob | None, manifest: str | None, output: str | None, workdir: Path) -> DubJob:
    """The job of this run: given inline, or read from a manifest path or URI; ``output`` overrides its output."""
    if (job is None) == (manifest is None):
        raise ValueError("give exactly one of `job` (the job itself) and `manifest` (a path or s3:// URI of a job manifest)"
                         f"; got {'both' if job is not None else 'neither'}")
    if job is None:
        job = load_manifest_uri(manifest, workdir)  # type: ignore[arg-type]
    if output:
        job = job.model_copy(update={"output": output})
    if not job.output:
        where = f"the manifest {manifest}" if manifest else "the job"
        raise ValueError(f"{where} has no `output`: add `output: s3://bucket/prefix` (or a folder) to it, or pass the flow's `output` parameter")
    check_output(job.output)  # an unreachable bucket or wrong credentials fail here, before any work
    return job


@task(name="fetch-inputs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient)
def fetch_inputs_task(job: DubJob, workdir: Path) -> DubJob:
    """Download every remote input (film, dub tracks) and verify its size and checksum; local ones pass."""
    fetched = fetch_inputs(job, workdir)
    if fetched != job:
        get_run_logger().info("inputs fetched into %s", workdir)
    return fetched


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_task(job: DubJob, workdir: Path) -> Preflight:
    """Probe the film and every dub track; conform a VFR film when the job allows it."""
    logger = get_run_logger()
    pre = preflight(job)
    video = pre.info.require_video()
    if video.vfr:  # preflight already refused it unless vfr_policy is 'conform'
        conformed = conform_vfr(pre.film, pre.info, workdir / "film.cfr.mkv")
        pre = Preflight(conformed, probe(conformed), pre.stems, pre.notes, source_info=pre.info)
    for note in pre.notes:
        logger.warning(note)
    logger.info(
        "film %s: %dx%d %s, %d frames at %s fps; %d dub track(s)",
        pre.film.name, video.width, video.height, video.pix_fmt, video.frame_count, video.fps, len(pre.stems),
    )
    return pre


@task(name="mix-dub-audio", cache_policy=NO_CACHE, retries=1, retry_condition_fn=transient)
def mix_audio_task(job: DubJob, pre: Preflight, dst: Path, workdir: Path) -> MixResult:
    """Mix the dub's stems (resampled, length-checked) into one WAV as long as the picture."""
    logger = get_run_logger()
    mix = prepare_audio(job, pre, dst, workdir)
    for note in mix.notes:
        logger.info(note)
    logger.info("dub mix: %d samples, %d Hz, %d channel(s)", mix.samples, mix.sample_rate, mix.channels)
    return mix


@task(name="dialogue-16k", cache_policy=NO_CACHE)
def dialogue_task(job: DubJob, pre: Preflight, dst: Path, workdir: Path) -> MixResult:
    """The dub's dialogue alone at the lip-sync model's sample rate, as long as the picture."""
    from lipsync.models.wav2lip import Wav2Lip

    return prepare_dialogue(job, pre, dst, workdir, Wav2Lip.contract.sample_rate)
