"""Ingest: check every input before work starts, conform VFR if asked, build the dubbed mix."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import DubJob
from lipsync.media.audio import MixResult
from lipsync.media.probe import probe
from lipsync.pipeline import Preflight, conform_vfr, preflight, prepare_audio, prepare_dialogue


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_task(job: DubJob, workdir: Path) -> Preflight:
    """Probe the film and every dub track; conform a VFR film when the job allows it."""
    logger = get_run_logger()
    pre = preflight(job)
    video = pre.info.require_video()
    if video.vfr:  # preflight already refused it unless vfr_policy is 'conform'
        conformed = conform_vfr(pre.film, pre.info, workdir / "film.cfr.mkv")
        pre = Preflight(conformed, probe(conformed), pre.stems, pre.notes)
    for note in pre.notes:
        logger.warning(note)
    logger.info(
        "film %s: %dx%d %s, %d frames at %s fps; %d dub track(s)",
        pre.film.name, video.width, video.height, video.pix_fmt, video.frame_count, video.fps, len(pre.stems),
    )
    return pre


@task(name="mix-dub-audio", cache_policy=NO_CACHE, retries=1)
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
