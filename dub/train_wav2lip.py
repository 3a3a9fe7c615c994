"""`dub train wav2lip`: train (or fine-tune) the Wav2Lip generator against a frozen lip-sync expert."""

from __future__ import annotations

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
) -> None:
    """Train the Wav2Lip generator on DATASET against the frozen expert; checkpoints in the published format."""
    from lipsync.train.data import TrainingSet
    from lipsync.train.wav2lip import train_wav2lip

    def echo(rec: dict[str, Any]) -> None:
        if "event" in rec:
            typer.echo(f"{rec['event']} at step {rec['step']} on {rec['device']}, {rec['clips']} clips")
        elif rec["step"] % log_every == 0 or rec["step"] == steps:
            extra = f" perceptual {rec['perceptual']:.4f} disc {rec['disc_real']:.4f}/{rec['disc_fake']:.4f}" if gan else ""
            typer.echo(f"step {rec['step']}: loss {rec['loss']:.4f} l1 {rec['l1']:.4f} sync {rec['sync']:.4f}{extra} "
                       f"({rec['step_s']:.2f} s/step)")

    try:
        ds = TrainingSet(dataset, split="train")
        res = train_wav2lip(ds, out, expert_checkpoint=expert, init_checkpoint=init, init_disc_checkpoint=init_disc,
                            steps=steps, batch_size=batch_size, lr=lr, syncnet_wt=syncnet_wt, gan=gan, disc_wt=disc_wt,
                            device=device, seed=seed, checkpoint_every=checkpoint_every, resume=resume, log=echo,
                            keep_checkpoints=keep)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{out}: step {res.global_step}, last checkpoint {res.last_checkpoint}")
