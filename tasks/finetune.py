"""Fine-tuning: the generator tuned on this film's speaking faces before the lip-sync stage (``options.finetune``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from dubcore.manifest import DubJob
from dubcore.records import FaceTrack
from lipsync.render.cache import default_cache_dir
from lipsync.store import resolve

from .faces import _device
from .progress import reporter

#: Where the tuned generator is published, relative to the output folder.
FINETUNED = Path("model") / "wav2lip_finetuned.pth"


@task(name="finetune-lipsync", cache_policy=NO_CACHE)
def finetune_task(job: DubJob, pre, tracks: Sequence[FaceTrack], asd, audio: np.ndarray,  # type: ignore[no-untyped-def]
                  root: Path, scratch: Path, characters: dict[str, str] | None = None) -> tuple[DubJob, dict[str, Any]]:
    """Fine-tune ``options.lipsync_checkpoint`` on the film; returns the job rendering with the tuned weights.

    A skipped fine-tune (no face speaks long enough) leaves the job as it was."""
    from lipsync.train.film import finetune_on_film

    logger = get_run_logger()
    opts = job.options.finetune
    assert opts is not None and job.options.lipsync_checkpoint
    init, expert = resolve(job.options.lipsync_checkpoint), resolve(opts.expert)
    disc = resolve(opts.disc_checkpoint) if opts.disc_checkpoint else None
    cache = None
    if job.options.cache:
        cache = Path(job.options.cache_dir).expanduser() if job.options.cache_dir else default_cache_dir()
    progress = reporter("finetune", logger)

    def log(rec: dict[str, Any]) -> None:
        if "loss" in rec:
            progress(int(rec["step"]), opts.steps)

    result = finetune_on_film(pre.film, pre.info, tracks, asd, audio, root / FINETUNED, init=init, expert=expert,
                              steps=opts.steps, workdir=scratch / "finetune", characters=characters,
                              batch_size=opts.batch_size, lr=opts.lr, syncnet_wt=opts.syncnet_wt, gan=opts.gan,
                              disc_checkpoint=disc, min_clip_frames=opts.min_clip_frames, seed=opts.seed,
                              device=_device(job.options.lipsync_device), cache_dir=cache, log=log)
    summary = {**result.to_dict(), "init": str(job.options.lipsync_checkpoint), "expert": opts.expert}
    summary.pop("losses")
    if result.checkpoint:
        summary["checkpoint"] = str(FINETUNED)
    if result.status == "skipped":
        logger.warning("fine-tuning skipped: %s; lip-sync uses %s", result.reason, job.options.lipsync_checkpoint)
        return job, summary
    logger.info("fine-tuning %s: %d step(s) on %d clip(s) (%d frames), loss %.4f -> %.4f", result.status, result.steps,
                result.clips, result.frames, result.first_loss or float("nan"), result.last_loss or float("nan"))
    rows = "\n".join(f"| {int(r['step'])} | {r['loss']:.4f} | {r.get('l1', float('nan')):.4f} | {r.get('sync', float('nan')):.4f} |"
                     for r in result.losses)
    create_markdown_artifact(
        key="dub-film-finetune",
        markdown=f"# Fine-tuning on {pre.film.name}\n\n{result.status}: {result.steps} step(s) on {result.clips} clip(s) "
                 f"({result.frames} frames) from `{job.options.lipsync_checkpoint}`, expert `{opts.expert}`.\n\n"
                 f"| step | loss | L1 | sync |\n|---|---|---|---|\n{rows}\n",
        description="Generator fine-tuned on this film's speaking faces")
    options = job.options.model_copy(update={"lipsync_checkpoint": str(root / FINETUNED)})
    return job.model_copy(update={"options": options}), summary
