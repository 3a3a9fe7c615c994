"""Training stages of the ``dub-film-train`` flow: dataset, expert, generator (thin wrappers over lipsync.train)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from lipsync import store as model_store

from .retry import transient
from .progress import reporter


def _echo_every(logger, name: str, total: int):  # type: ignore[no-untyped-def]
    progress = reporter(name, logger)

    def log(rec: dict[str, Any]) -> None:
        if "loss" in rec and "step" in rec:
            progress(int(rec["step"]), total)
        elif rec.get("event") == "eval":
            logger.info("%s eval at step %s: %s", name, rec.get("step"),
                        {k: v for k, v in rec.items() if k not in ("event", "step")})

    return log


@task(name="train-dataset", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30, retry_condition_fn=transient)
def dataset_task(films: Sequence[str], out: Path, names: dict[str, dict[str, Any]] | None, val_films: Sequence[str],
                 val_fraction: float, device: str) -> Path:
    """Cut the films into talking-face clips (`dub train dataset`); an existing complete set is reused."""
    from lipsync.faces.detect import build_detector
    from lipsync.models.light_asd import load_light_asd
    from lipsync.train.dataset import build_dataset, name_sources

    logger = get_run_logger()
    if (out / "dataset.json").exists():
        logger.info("%s: dataset already built, reused", out)
        return out
    if out.exists():  # a run killed while writing clips: start the set again
        import shutil

        shutil.rmtree(out)
    sources = name_sources(films, names)
    detector = build_detector("retinaface", weights="retinaface_mobilenet0.25", device=device)
    asd = load_light_asd(model_store.resolve("light_asd"), device)
    progress = reporter("dataset", logger)
    path = build_dataset(sources, out, detector=detector, asd_model=asd, val_films=val_films, val_fraction=val_fraction,
                         progress=lambda stage, done, total: progress(done, total) if stage.endswith("clips") else None)
    import json

    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = [{"split": s, **doc["counts"][s], "hours": doc["hours"][s]} for s in ("train", "val")]
    create_table_artifact(rows, key="dub-film-train-dataset", description=f"Training set {out}")
    logger.info("dataset: %s", rows)
    return out


@task(name="train-expert", cache_policy=NO_CACHE)
def expert_task(dataset: Path, out: Path, steps: int, batch_size: int, lr: float, init: str | None, width: float,
                checkpoint_every: int, device: str | None) -> Path:
    """Train the lip-sync expert (resumes from ``out/last.pth``); returns its last checkpoint."""
    from dubcore.schema import write_json
    from lipsync.train.expert import train_expert

    logger = get_run_logger()
    res = train_expert(dataset, out, steps=steps, batch_size=batch_size, lr=lr, device=device,
                       init=model_store.resolve(init) if init else None, width=width, checkpoint_every=checkpoint_every,
                       log=_echo_every(logger, "expert", steps))
    write_json(out / "expert.json", "training", {"model": "lipsync_expert", **res.to_dict()})
    create_markdown_artifact(
        key="dub-film-train-expert",
        markdown=(f"# Lip-sync expert\n\nstep {res.global_step} (resumed from {res.resumed_from}), final loss "
                  f"{res.final_loss if res.final_loss is not None else float('nan'):.4f}\n\n"
                  f"in-sync vs off-sync accuracy: train {_pct(res.train_accuracy)}, val {_pct(res.val_accuracy)}\n"),
        description="Expert lip-sync discriminator training")
    return out / "last.pth"


@task(name="train-wav2lip", cache_policy=NO_CACHE)
def wav2lip_task(dataset: Path, out: Path, expert: str, steps: int, batch_size: int, lr: float, init: str | None,
                 gan: bool, checkpoint_every: int, device: str, eval_every: int | None = None, eval_windows: int = 64) -> Path:
    """Train (or fine-tune from ``init``) the generator against the frozen expert; resumes from ``out/last.pth``.

    FID / LSE-D / LSE-C / L1 on the val split once per epoch (or every ``eval_every`` steps) with the
    weights the model store holds; each evaluation is logged and kept in the ``dub-film-train-eval`` table."""
    from lipsync.train.data import TrainingSet
    from lipsync.train.fid import val_evaluator
    from lipsync.train.wav2lip import train_wav2lip

    logger = get_run_logger()
    records: list[dict[str, Any]] = []
    echo = _echo_every(logger, "wav2lip", steps)

    evals: list[dict[str, Any]] = []

    def log(rec: dict[str, Any]) -> None:
        if "loss" in rec:
            records.append(rec)
        elif rec.get("event") == "eval":
            evals.append(rec)
        echo(rec)

    evaluator = val_evaluator(dataset, windows=eval_windows, warn=logger.warning)
    res = train_wav2lip(TrainingSet(dataset, split="train"), out, expert_checkpoint=model_store.resolve(expert),
                        init_checkpoint=model_store.resolve(init) if init else None, steps=steps, batch_size=batch_size,
                        lr=lr, gan=gan, device=device, checkpoint_every=checkpoint_every, log=log,
                        evaluate_every=eval_every, evaluator=evaluator)
    if evals:
        create_table_artifact([{k: e.get(k) for k in ("step", "windows", "fid", "lse_d", "lse_c", "l1")} for e in evals],
                              key="dub-film-train-eval", description="Generator on the validation split (FID, LSE-D, LSE-C, L1)")
    every = max(1, math.ceil(len(records) / 50))
    rows = [{k: r.get(k) for k in ("step", "loss", "l1", "sync", "perceptual")} for r in records[::every]]
    if rows:
        create_table_artifact(rows, key="dub-film-train-wav2lip", description=f"Generator losses ({out})")
    logger.info("wav2lip: step %d, last checkpoint %s", res.global_step, res.last_checkpoint)
    return out / "last.pth"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
