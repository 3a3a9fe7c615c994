"""`dub train expert`: train the lip-sync expert discriminator (SyncNet_color layout) on a training set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from .train import train_app


@train_app.command("expert")
def expert(
    dataset: Path = typer.Argument(..., help="Training-set folder (dataset.json; `dub train dataset`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, last.pth, train_log.jsonl, expert.json."),
    steps: int = typer.Option(100_000, "--steps", min=0, help="Total steps of the run folder (a resumed run counts on)."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="Pairs per step, per process (half in sync, half off)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (the reference's 1e-4)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start a fresh run from these weights (e.g. lipsync_expert.pth)."),
    min_offset: int = typer.Option(5, "--min-offset", min=1, help="Off-sync pairs are at least this many frames apart."),
    width: float = typer.Option(1.0, "--width", help="Channel width factor; 1.0 is the published network (smaller: quick experiments)."),
    checkpoint_every: int = typer.Option(3000, "--checkpoint-every", min=1, help="Save a checkpoint every N steps."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/last.pth when it exists."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available; torchrun: one GPU per rank)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on CUDA)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample draws and of the initial weights."),
    eval_samples: int = typer.Option(256, "--eval-samples", min=0, help="Balanced pairs per split classified at the end."),
    log_every: int = typer.Option(50, "--log-every", min=1, help="Log (and print) a line every N steps."),
) -> None:
    """Train the expert lip-sync discriminator on DATASET; checkpoints in the published lipsync_expert.pth layout."""
    from dubcore.schema import write_json
    from lipsync.train.data import TrainingSet
    from lipsync.train.expert import train_expert

    def echo(rec: dict[str, Any]) -> None:
        if "step" in rec and "loss" in rec:
            typer.echo(f"step {rec['step']}: loss {rec['loss']:.4f} batch accuracy {rec['accuracy']:.3f} "
                       f"epoch {rec['epoch']} ({rec['elapsed_s']:.1f} s)")

    try:
        ds = TrainingSet(dataset)
        res = train_expert(ds, out, steps=steps, batch_size=batch_size, lr=lr, device=device, seed=seed,
                           checkpoint_every=checkpoint_every, resume=resume, log=echo, log_every=log_every,
                           min_offset=min_offset, eval_samples=eval_samples, amp=amp, init=init, width=width)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 reports
    write_json(out / "expert.json", "training", {"model": "lipsync_expert", **res.to_dict()})

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    typer.echo(f"in-sync vs off-sync accuracy: train {pct(res.train_accuracy)}, val {pct(res.val_accuracy)} "
               f"({eval_samples} pairs each)")
    typer.echo(f"{out}: step {res.global_step}, last checkpoint {res.last_checkpoint}")
