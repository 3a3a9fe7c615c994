"""The ``dub-film-train`` flow: the studio's own lip-sync expert and Wav2Lip generator, from its own films.

Stages (each optional): dataset (`dub train dataset`) -> expert (`dub train expert`)
-> generator (`dub train wav2lip`, Wav2Lip or Wav2Lip + GAN, optionally fine-tuned
from an existing generator).  Training is resumable: the work folder keeps each
stage's ``last.pth``, and a new run of the same parameters continues from there
(steps are totals).  With a local ``output`` the work folder is the output
itself; with an ``s3://`` output it is ``$DUB_CACHE_DIR/train/<hash of output>``
and the whole folder is published under ``output`` (``_SUCCESS`` last) when every
stage is done.  Multi-GPU data parallel runs use ``torchrun -m dub train ...``
directly (see README, Training); this flow trains on one device.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from dubcore.storage import open_storage, scheme_of
from tasks.train import dataset_task, expert_task, wav2lip_task


def _workdir(output: str) -> Path:
    if scheme_of(output) == "file":
        return Path(output[len("file://"):] if output.startswith("file://") else output).expanduser()
    from lipsync.render.cache import default_cache_dir

    return default_cache_dir() / "train" / hashlib.sha256(output.encode("utf-8")).hexdigest()[:16]


@flow(name="dub-film-train", log_prints=True, validate_parameters=True)
def dub_film_train(
    output: Annotated[str, Field(description="Run folder or URI (s3://bucket/prefix): dataset/, expert/, wav2lip/.")],
    films: Annotated[list[str], Field(description="Films (local paths or s3:// URIs) to cut the training set from.")] = [],  # noqa: B006
    dataset: Annotated[str | None, Field(description="An existing training-set folder instead of `films`.")] = None,
    names: Annotated[dict[str, dict[str, Any]] | None, Field(
        description='Characters per film name: {"film": {"character": N} | {"sides": {"left": A, "right": B}} | {"tracks": {...}}}.')] = None,
    val_films: Annotated[list[str], Field(description="Films whose characters form the validation split.")] = [],  # noqa: B006
    val_fraction: Annotated[float, Field(ge=0, le=1, description="Also send this fraction of characters to validation.")] = 0.0,
    expert_steps: Annotated[int, Field(ge=0, description="Expert training steps (0: use `expert`).")] = 0,
    expert: Annotated[str, Field(description="Expert to train the generator against when expert_steps is 0 (entry or path).")] = "lipsync_expert",
    expert_init: Annotated[str | None, Field(description="Start the expert from these weights.")] = None,
    expert_batch_size: Annotated[int, Field(ge=2, description="Expert pairs per step (half in sync, half off).")] = 64,
    expert_lr: Annotated[float, Field(gt=0, description="Expert Adam learning rate.")] = 1e-4,
    expert_width: Annotated[float, Field(gt=0, le=4, description="Channel width factor of the expert; 1.0 is the published network.")] = 1.0,
    wav2lip_steps: Annotated[int, Field(ge=0, description="Generator training steps (0: no generator stage).")] = 0,
    wav2lip_init: Annotated[str | None, Field(description="Fine-tune from this generator (entry or path).")] = None,
    wav2lip_batch_size: Annotated[int, Field(ge=1, description="Generator windows per step.")] = 16,
    wav2lip_lr: Annotated[float, Field(gt=0, description="Generator Adam learning rate.")] = 1e-4,
    gan: Annotated[bool, Field(description="Train with the visual quality discriminator (Wav2Lip + GAN).")] = False,
    eval_every: Annotated[int | None, Field(ge=1, description="Evaluate the generator on the val split every N steps (unset: once per epoch).")] = None,
    eval_windows: Annotated[int, Field(ge=0, description="5-frame val windows per evaluation (0: no evaluation).")] = 64,
    checkpoint_every: Annotated[int, Field(ge=1, description="Save checkpoints every N steps (resume point).")] = 3000,
    device: Annotated[str, Field(description="auto, cpu, cuda or cuda:N.")] = "auto",
) -> dict[str, Any]:
    """Train the studio's lip-sync expert and/or generator; returns where everything is.

    Args:
        output: Run folder or URI (s3://bucket/prefix): dataset/, expert/, wav2lip/.
        films: Films (local paths or s3:// URIs) to cut the training set from.
        dataset: An existing training-set folder instead of `films`.
        names: Characters per film name: {"film": {"character": N} | {"sides": {"left": A, "right": B}} | {"tracks": {...}}}.
        val_films: Films whose characters form the validation split.
        val_fraction: Also send this fraction of characters to validation.
        expert_steps: Expert training steps (0: use `expert`).
        expert: Expert to train the generator against when expert_steps is 0 (entry or path).
        expert_init: Start the expert from these weights.
        expert_batch_size: Expert pairs per step (half in sync, half off).
        expert_lr: Expert Adam learning rate.
        expert_width: Channel width factor of the expert; 1.0 is the published network.
        wav2lip_steps: Generator training steps (0: no generator stage).
        wav2lip_init: Fine-tune from this generator (entry or path).
        wav2lip_batch_size: Generator windows per step.
        wav2lip_lr: Generator Adam learning rate.
        gan: Train with the visual quality discriminator (Wav2Lip + GAN).
        eval_every: Evaluate the generator on the val split every N steps (unset: once per epoch).
        eval_windows: 5-frame val windows per evaluation (0: no evaluation).
        checkpoint_every: Save checkpoints every N steps (resume point).
        device: auto, cpu, cuda or cuda:N.
    """
    logger = get_run_logger()
    if not films and not dataset:
        raise ValueError("give `films` to build a training set from, or an existing `dataset` folder")
    work = _workdir(output)
    work.mkdir(parents=True, exist_ok=True)
    if dataset:
        ds = Path(dataset).expanduser()
        if not (ds / "dataset.json").exists():
            raise FileNotFoundError(f"{ds}: no dataset.json; build one with `dub train dataset` or give `films`")
    else:
        ds = dataset_task(films, work / "dataset", names, val_films, val_fraction, "cpu" if device == "auto" else device)
    result: dict[str, Any] = {"output": output, "dataset": str(ds)}
    expert_ckpt = expert
    if expert_steps:
        expert_ckpt = str(expert_task(ds, work / "expert", expert_steps, expert_batch_size, expert_lr, expert_init,
                                      expert_width, checkpoint_every, None if device == "auto" else device))
        result["expert"] = "expert/last.pth"
    if wav2lip_steps:
        wav2lip_task(ds, work / "wav2lip", expert_ckpt, wav2lip_steps, wav2lip_batch_size, wav2lip_lr, wav2lip_init, gan,
                     checkpoint_every, device, eval_every, eval_windows)
        result["wav2lip"] = "wav2lip/last.pth"
    if scheme_of(output) != "file":
        staging = open_storage(output).stage(output)
        try:
            for entry in work.iterdir():
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging.root / entry.name)
            result["output"] = staging.commit()
        except BaseException:
            staging.abort()
            raise
    logger.info("training published at %s: %s", result["output"], result)
    return result
