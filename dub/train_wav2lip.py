"""`dub train wav2lip`: train (or fine-tune) the Wav2Lip generator against a frozen lip-sync expert."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from .train import train_app


@train_app.command("wav2lip")
def wav2lip(
    dataset: Path = typer.Argument(..., help="Training-set folder (dataset.json; `dub train dataset`)."),
    expert: Path = typer.Option(..., "--expert", help="Lip-sync expert checkpoint (lipsync_expert.pth or `dub train expert`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, last.pth, train_log.jsonl."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this generator (fine-tune; e.g. wav2lip_gan.pth)."),
    init_disc: Optional[Path] = typer.Option(None, "--init-disc", help="Start the GAN discriminator from this (visual_quality_disc.pth)."),
    steps: int = typer.Option(100_000, "--steps", min=0, help="Total steps of the run folder (a resumed run counts on)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Samples (5-frame windows) per step, per process."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (generator and discriminator)."),
    syncnet_wt: float = typer.Option(0.03, "--syncnet-wt", help="Weight of the expert's sync loss (fixed)."),
    gan: bool = typer.Option(False, "--gan", help="Also train the visual quality discriminator (Wav2Lip + GAN)."),
    disc_wt: float = typer.Option(0.07, "--disc-wt", help="Weight of the adversarial loss with --gan."),
    checkpoint_every: int = typer.Option(3000, "--checkpoint-every", min=1, help="Save a checkpoint every N steps."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, help="Keep only the newest N step checkpoints."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/last.pth when it exists."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (torchrun: one GPU per rank)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample draws and of the initial weights."),
    log_every: int = typer.Option(50, "--log-every", min=1, help="Print a line every N steps."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=1,
                                             help="Evaluate on the val split every N steps (default: once per epoch)."),
    eval_windows: int = typer.Option(64, "--eval-windows", min=0,
                                     help="5-frame windows of val clips per evaluation (0: no evaluation)."),
    fid_weights: str = typer.Option("fid_inception", "--fid-weights",
                                    help="FID Inception: a model-store entry or a file (not in the store: FID skipped)."),
    syncnet_weights: str = typer.Option("syncnet_v2", "--syncnet-weights",
                                        help="SyncNet for LSE-D/LSE-C: a model-store entry or a file (not in the store: skipped)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Model store folder (default $DUB_MODEL_STORE or ~/.cache/dub-film/models)."),
) -> None:
    """Train the Wav2Lip generator on DATASET against the frozen expert; checkpoints in the published format.

    Evaluation (FID, LSE-D/LSE-C, L1 on the dataset's val split) runs once per epoch, or every
    --eval-every steps, and is logged as an "eval" line of train_log.jsonl.
    """
    from lipsync.train.data import TrainingSet
    from lipsync.train.fid import val_evaluator
    from lipsync.train.wav2lip import train_wav2lip

    def echo(rec: dict[str, Any]) -> None:
        if rec.get("event") == "eval":
            def num(key: str) -> str:
                return "n/a" if rec.get(key) is None else f"{rec[key]:.4f}"

            typer.echo(f"eval at step {rec['step']} ({rec.get('split')}, {rec.get('windows')} windows): fid {num('fid')} "
                       f"lse-d {num('lse_d')} lse-c {num('lse_c')} l1 {num('l1')} ({rec.get('eval_s', 0):.1f} s)")
        elif "event" in rec:
            typer.echo(f"{rec['event']} at step {rec['step']} on {rec['device']}, {rec['clips']} clips")
        elif rec["step"] % log_every == 0 or rec["step"] == steps:
            extra = f" perceptual {rec['perceptual']:.4f} disc {rec['disc_real']:.4f}/{rec['disc_fake']:.4f}" if gan else ""
            typer.echo(f"step {rec['step']}: loss {rec['loss']:.4f} l1 {rec['l1']:.4f} sync {rec['sync']:.4f}{extra} "
                       f"({rec['step_s']:.2f} s/step)")

    from lipsync.store import StoreError

    try:
        ds = TrainingSet(dataset, split="train")
        evaluator = val_evaluator(dataset, windows=eval_windows, fid_weights=fid_weights, syncnet_weights=syncnet_weights,
                                  store=store, seed=seed, warn=lambda msg: typer.echo(f"warning: {msg}", err=True))
        res = train_wav2lip(ds, out, expert_checkpoint=expert, init_checkpoint=init, init_disc_checkpoint=init_disc,
                            steps=steps, batch_size=batch_size, lr=lr, syncnet_wt=syncnet_wt, gan=gan, disc_wt=disc_wt,
                            device=device, seed=seed, checkpoint_every=checkpoint_every, resume=resume, log=echo,
                            keep_checkpoints=keep, evaluate_every=eval_every, evaluator=evaluator)
    except (FileNotFoundError, ValueError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        typer.echo(f"{out}: step {res.global_step}, last checkpoint {res.last_checkpoint}")
