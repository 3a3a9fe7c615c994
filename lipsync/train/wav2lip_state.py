"""A Wav2Lip training run's state on disk: checkpoint files written, a run resumed, init weights loaded.

The checkpoint and resume contract is the one documented in :mod:`lipsync.train.wav2lip`
(**Checkpoints**, **Resume**, **Fine-tuning**): ``out_dir/checkpoint_step{N:09d}.pth``
and ``last.pth`` (with the GAN ``disc_checkpoint_step{N:09d}.pth`` and ``disc_last.pth``),
each written to a temporary name and renamed into place.  The training loop calls
:func:`_restore` once at its start and :func:`_save_checkpoint` at its checkpoint steps.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

if TYPE_CHECKING:  # the run's records live with the loop; only their attributes are read here
    from lipsync.train.wav2lip import TrainConfig, _Nets, _Run

_logger = logging.getLogger("lipsync.train.wav2lip")  # the run's logger, as before the split

__all__ = ["LAST", "DISC_LAST"]

LAST = "last.pth"
DISC_LAST = "disc_last.pth"


# --------------------------------------------------------------------------- files


from .expert import _atomic_save  # noqa: E402  (one atomic checkpoint write for both trainers)


def _atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, renamed into place); copies where links fail."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def _strip_module(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


# --------------------------------------------------------------------------- loading and resume


def _load_init_disc(disc: nn.Module, path: str | os.PathLike[str]) -> None:
    from lipsync.models.wav2lip_disc import disc_state_dict

    disc.load_state_dict(disc_state_dict(torch.load(path, map_location="cpu", weights_only=True)))


def _load_last(nets: _Nets, cfg: TrainConfig, last: Path) -> tuple[int, int]:
    """Generator, optimizer, scaler and torch RNG from ``last.pth``; its ``(global_step, global_epoch)``."""
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    nets.generator.load_state_dict(_strip_module(ckpt["state_dict"]), strict=True)
    nets.optimizer.load_state_dict(ckpt["optimizer"])
    training = ckpt.get("training") or {}
    if training.get("scaler") and cfg.amp:
        nets.scaler.load_state_dict(training["scaler"])
    if "torch_rng" in training:
        torch.set_rng_state(training["torch_rng"])
    return int(ckpt["global_step"]), int(ckpt.get("global_epoch", 0))


def _load_disc_last(nets: _Nets, cfg: TrainConfig, out: Path, step: int,
                    init_disc_checkpoint: str | os.PathLike[str] | None) -> None:
    """The discriminator of a resumed GAN run: ``disc_last.pth``, else ``init_disc_checkpoint`` (if any)."""
    from lipsync.models.wav2lip_disc import disc_state_dict

    dlast = out / DISC_LAST
    if not dlast.exists():
        if init_disc_checkpoint is not None:
            _load_init_disc(nets.disc, init_disc_checkpoint)
        return
    dck = torch.load(dlast, map_location="cpu", weights_only=True)
    nets.disc.load_state_dict(disc_state_dict(dck), strict=True)
    if "optimizer" in dck:
        nets.disc_opt.load_state_dict(dck["optimizer"])
    if (dck.get("training") or {}).get("scaler") and cfg.amp:
        nets.disc_scaler.load_state_dict(dck["training"]["scaler"])
    if int(dck.get("global_step", step)) != step:
        _logger.warning("%s is at step %s, %s at %s", dlast, dck.get("global_step"), out / LAST, step)


def _restore(nets: _Nets, cfg: TrainConfig, out: Path, resume: bool, init_checkpoint: str | os.PathLike[str] | None,
             init_disc_checkpoint: str | os.PathLike[str] | None) -> tuple[int, int, int | None]:
    """Resume from ``out/last.pth`` or start from the init checkpoints: ``(step, epoch, resumed_from)``."""
    from lipsync.models.wav2lip import load_wav2lip

    last = out / LAST
    if resume and last.exists():
        step, epoch = _load_last(nets, cfg, last)
        if cfg.gan:
            _load_disc_last(nets, cfg, out, step, init_disc_checkpoint)
        return step, epoch, step
    if init_checkpoint is not None:
        nets.generator.load_state_dict(load_wav2lip(init_checkpoint, "cpu").state_dict(), strict=True)
    if cfg.gan and init_disc_checkpoint is not None:
        _load_init_disc(nets.disc, init_disc_checkpoint)
    return 0, 0, None


# --------------------------------------------------------------------------- saving


def _save_checkpoint(run: _Run, nets: _Nets, step: int, epoch: int) -> Path | None:
    """Rank 0: the step's checkpoint (and the discriminator's), ``last.pth`` linked to it, old ones pruned."""
    if not run.is_main:
        return None
    cfg, out = run.cfg, run.out
    name = f"checkpoint_step{step:09d}.pth"
    training = {"torch_rng": torch.get_rng_state(), "scaler": nets.scaler.state_dict() if cfg.amp else {},
                "config": cfg.to_dict()}
    path = out / name
    _atomic_save({"state_dict": nets.generator.state_dict(), "optimizer": nets.optimizer.state_dict(),
                  "global_step": step, "global_epoch": epoch, "training": training}, path)
    if cfg.gan:
        dpath = out / f"disc_{name}"
        _atomic_save({"state_dict": nets.disc.state_dict(), "optimizer": nets.disc_opt.state_dict(), "global_step": step,
                      "global_epoch": epoch,
                      "training": {"scaler": nets.disc_scaler.state_dict() if cfg.amp else {}}}, dpath)
        _atomic_link(dpath, out / DISC_LAST)
    _atomic_link(path, out / LAST)  # last.pth last: it names a step whose disc file exists
    if run.keep_checkpoints:
        for old in sorted(out.glob("checkpoint_step*.pth"))[:-run.keep_checkpoints]:
            old.unlink(missing_ok=True)
            (out / f"disc_{old.name}").unlink(missing_ok=True)
    return path
