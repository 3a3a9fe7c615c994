"""Wav2Lip generator training against a frozen lip-sync expert, with the optional visual quality GAN.

The recipe of Prajwal et al. (ACM MM 2020), written for dub-film against our
training-set format (:mod:`lipsync.train.data`):

**Samples** (:class:`lipsync.train.generator_sampler.GeneratorSampler`): a target
window of ``T = 5`` frames, its lower halves masked, a reference window from the same
clip and the mel windows; step ``s`` draws from ``numpy.random.default_rng([seed, rank, s])``,
so a resumed run draws exactly what an uninterrupted one would.

**Losses.**  ``l1 = |G(x) - target|`` over the whole crop; ``sync = BCE(cos(a, v), 1)``
with ``a, v`` the frozen expert's embeddings of the expert window and of the
5 *generated* lower halves stacked on channels ``(15, 48, 96)``; with ``gan``,
``perceptual = BCE(D(G(x)), 1)`` of the visual quality discriminator
(:class:`lipsync.models.wav2lip_disc.Wav2LipDiscQual`, lower halves), and ``D``
is trained on real vs generated (detached) crops with ``BCE(D(real), 1) + BCE(D(fake), 0)``.
Generator loss: ``(1 - syncnet_wt - disc_wt) * l1 + syncnet_wt * sync + disc_wt * perceptual``
(``disc_wt`` is 0 without ``gan``: the reference's non-GAN ``(1 - syncnet_wt) * l1 + syncnet_wt * sync``).

``syncnet_wt`` is **fixed** (default 0.03, the paper's value).  The reference
starts it at 0 and switches to 0.03 once its evaluation sync loss falls below
0.75; to reproduce that, train with ``syncnet_wt=0`` and then continue the same
``out_dir`` (``resume``) with ``syncnet_wt=0.03``: weights are arguments, not
checkpoint state.  The sync loss is computed (and logged) even at weight 0.

**Optimisers.**  Adam, ``lr`` 1e-4; betas (0.5, 0.999) with the GAN (both nets,
as the reference's GAN script), torch's default (0.9, 0.999) without.  The
expert is loaded with :func:`lipsync.models.expert.load_expert`, put in eval
mode and ``requires_grad_(False)``: it never changes.

**Checkpoints** (published format, loadable by :func:`lipsync.models.wav2lip.load_wav2lip`
and ``dub lipsync --checkpoint``; written and read back by :mod:`lipsync.train.wav2lip_state`)::

    out_dir/checkpoint_step{N:09d}.pth   {"state_dict", "optimizer", "global_step", "global_epoch", "training"}
    out_dir/last.pth                     hard link to (or copy of) the newest one
    out_dir/disc_checkpoint_step{N:09d}.pth, out_dir/disc_last.pth   (with gan; same keys)
    out_dir/train_log.jsonl              one JSON object per step (and a {"event": ...} line per start/resume)

``state_dict`` keys carry no ``module.`` prefix; ``training`` holds the torch
RNG state, the AMP scaler and the run's settings (plain types and tensors only,
so ``torch.load(weights_only=True)`` reads the file).  Every file is written to
a temporary name and renamed, so a crash never leaves half a checkpoint.
``global_epoch`` counts passes of ``len(usable clips)`` samples (the reference's
epoch is one sample per video).

**Resume.**  With ``resume=True`` and an ``out_dir/last.pth``, training continues
from it: generator, optimizer, step, epoch, scaler (and ``disc_last.pth`` with
the GAN); ``init_checkpoint`` is then ignored.  ``steps`` is the total step
budget of the run folder, so a finished run resumed with the same ``steps``
does nothing.  Log lines of steps after the last checkpoint are written again
after a crash; readers keep the last line per step.

**Fine-tuning** (:func:`finetune`): the generator starts from ``init_checkpoint``
(any published-format generator: ``{"state_dict"}`` with or without ``module.``,
bare state dict, TorchScript) with a fresh optimizer at step 0, for ``steps``
steps; ``init_disc_checkpoint`` does the same for the discriminator (e.g. the
published ``visual_quality_disc.pth``).

**Devices.**  ``device="auto"`` picks CUDA when present.  On CUDA, mixed precision
(``torch.autocast`` float16 + ``GradScaler``, one per network; BCE losses in
float32).  Under ``torchrun`` (``WORLD_SIZE > 1``) the generator and the
discriminator are wrapped in DistributedDataParallel (NCCL on CUDA, one GPU per
``LOCAL_RANK``; gloo on CPU), ``batch_size`` is per process, every rank draws its
own samples, and only rank 0 writes checkpoints and logs (losses logged are
rank 0's).  Data is read in the training process (memory-mapped crops, cached
mel): enough on CPU and for a single GPU; a multi-worker loader is a possible
improvement.

**Evaluation hook** (the reference's periodic evaluation).  With ``evaluator``
(a callable ``(generator, step) -> dict``), rank 0 calls it with the unwrapped
generator (not the DDP wrapper) every ``evaluate_every`` steps, or, with
``evaluate_every=None``, after each step that completes an epoch; the other ranks
go on and wait for it in their next gradient all-reduce.  The generator is put
back in train mode afterwards, and the returned metrics are written as
``{"event": "eval", "step": N, **metrics, "eval_s": seconds}`` to
``train_log.jsonl`` and the ``log`` callback, after the step's own line (and
its checkpoint).  An exception raised by the evaluator stops training, as one
from ``log`` does.  :func:`lipsync.train.fid.evaluate_generator` computes FID,
LSE-D / LSE-C and L1 on a validation split (``dub train wav2lip --eval-every``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lipsync.device import resolve_device
from lipsync.train.data import TrainingSet
from lipsync.train.generator_sampler import GeneratorSampler
from lipsync.train.wav2lip_state import DISC_LAST, LAST, _restore, _save_checkpoint  # checkpoint files and resume

__all__ = ["TrainConfig", "TrainResult", "GeneratorSampler", "finetune", "train_wav2lip", "LAST", "DISC_LAST"]

LOG_FILE = "train_log.jsonl"

LogFn = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- config / result


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float = 1e-4
    syncnet_wt: float = 0.03
    gan: bool = False
    disc_wt: float = 0.07
    disc_lr: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 3000
    frames: int = 5
    mel_offset: int = 0
    amp: bool = False
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    out_dir: Path
    global_step: int
    global_epoch: int
    last_checkpoint: Path | None
    resumed_from: int | None
    generator: nn.Module
    optimizer: torch.optim.Optimizer
    disc: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    expert: nn.Module | None = None
    step_seconds: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _bce(p: torch.Tensor, target: float) -> torch.Tensor:
    """BCE of probabilities against a constant label, in float32 outside autocast."""
    with torch.autocast(device_type=p.device.type, enabled=False):
        p = p.float().clamp(0.0, 1.0)
        return F.binary_cross_entropy(p, torch.full_like(p, float(target)))


def sync_loss(expert: nn.Module, mel: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """``BCE(cos(audio_emb, face_emb), 1)`` of the expert on generated ``(B, T, 3, S, S)`` frames."""
    b, t, c, s, _ = generated.shape
    lower = generated[:, :, :, s // 2 :, :].reshape(b, t * c, s - s // 2, s)  # frame 0's B, G, R first
    a, v = expert(mel, lower)
    with torch.autocast(device_type=a.device.type, enabled=False):
        cos = F.cosine_similarity(a.float(), v.float())
    return _bce(cos.unsqueeze(1), 1.0)


def _write_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- a run's parts


@dataclass
class _Run:
    """What a run fixes at its start: settings, device, rank and folder; :meth:`emit` is its log (rank 0 only)."""

    cfg: TrainConfig
    dev: torch.device
    rank: int
    out: Path
    log: LogFn | None = None
    keep_checkpoints: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def emit(self, record: dict[str, Any]) -> None:
        """Rank 0: one line of ``train_log.jsonl``, then the ``log`` callback."""
        if not self.is_main:
            return
        _write_log(self.out / LOG_FILE, record)
        if self.log is not None:
            self.log(record)

    def barrier(self) -> None:
        if self.cfg.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


@dataclass
class _Nets:
    """A run's networks, optimisers and AMP scalers (``disc*`` None without the GAN).

    ``gen_train`` / ``disc_train`` are what the training step calls: the DDP
    wrappers under torchrun, else the networks themselves (:func:`_wrap_ddp`).
    """

    expert: nn.Module
    generator: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    disc: nn.Module | None = None
    disc_opt: torch.optim.Optimizer | None = None
    disc_scaler: torch.amp.GradScaler | None = None
    gen_train: nn.Module | None = None
    disc_train: nn.Module | None = None


def _check_settings(steps: int, batch_size: int, checkpoint_every: int, evaluate_every: int | None, syncnet_wt: float,
                    disc_wt: float, gan: bool) -> float:
    """Refuse bad settings; returns the discriminator's loss weight (0 without the GAN)."""
    if steps < 0 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError("steps must be >= 0, batch_size and checkpoint_every >= 1")
    if evaluate_every is not None and evaluate_every < 1:
        raise ValueError(f"evaluate_every must be >= 1 (or None: once per epoch), got {evaluate_every}")
    if not gan:
        disc_wt = 0.0
    if syncnet_wt < 0 or disc_wt < 0 or syncnet_wt + disc_wt > 1:
        raise ValueError(f"need 0 <= syncnet_wt, disc_wt and syncnet_wt + disc_wt <= 1, got {syncnet_wt}, {disc_wt}")
    return disc_wt


def _join_group(device: str | torch.device | None, world: int) -> tuple[torch.device, bool]:
    """The run's device (``cuda:LOCAL_RANK`` under torchrun) and whether this call created the process group."""
    dev = torch.device(resolve_device(None if device is None else str(device)))
    own_group = False
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            own_group = True
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev, own_group


def _build_nets(cfg: TrainConfig, dev: torch.device, expert_checkpoint: str | os.PathLike[str]) -> _Nets:
    """Seed torch, load the frozen expert, build the generator (and the discriminator) with their optimisers."""
    from lipsync.models.expert import load_expert
    from lipsync.models.wav2lip import Wav2Lip

    torch.manual_seed(cfg.seed)
    expert = load_expert(expert_checkpoint, dev).eval().requires_grad_(False)
    generator = Wav2Lip().to(dev)
    betas = (0.5, 0.999) if cfg.gan else (0.9, 0.999)
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
    nets = _Nets(expert, generator, optimizer, torch.amp.GradScaler("cuda", enabled=cfg.amp))
    if cfg.gan:
        from lipsync.models.wav2lip_disc import Wav2LipDiscQual

        nets.disc = Wav2LipDiscQual().to(dev)
        nets.disc_opt = torch.optim.Adam(nets.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
        nets.disc_scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    return nets


def _wrap_ddp(nets: _Nets, dev: torch.device, world: int) -> None:
    """Set what the step trains: DistributedDataParallel wrappers under torchrun, else the networks."""
    nets.gen_train, nets.disc_train = nets.generator, nets.disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if dev.type == "cuda" else None
        nets.gen_train = DDP(nets.generator, device_ids=ids)
        if nets.disc is not None:
            nets.disc_train = DDP(nets.disc, device_ids=ids)


def _start_record(run: _Run, step: int, clips: int, resumed_from: int | None,
                  init_checkpoint: str | os.PathLike[str] | None) -> dict[str, Any]:
    return {"event": "resume" if resumed_from is not None else "start", "step": step, "time": time.time(),
            "config": run.cfg.to_dict(), "device": str(run.dev), "clips": clips,
            "init_checkpoint": None if resumed_from is not None or init_checkpoint is None else os.fspath(init_checkpoint)}


# --------------------------------------------------------------------------- one step


def _sync_term(expert: nn.Module, mel: torch.Tensor, g: torch.Tensor, shape: tuple[int, ...], weight: float) -> torch.Tensor:
    """The expert's sync loss of the generated frames; at weight 0 it is computed (and logged) without gradient."""
    if weight > 0:
        return sync_loss(expert, mel, g.view(*shape))
    with torch.no_grad():
        return sync_loss(expert, mel, g.detach().view(*shape))


def _perceptual_term(disc: nn.Module | None, g: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """The discriminator's adversarial loss of the generated frames (no gradient into it); 0 without the GAN."""
    if disc is None:
        return torch.zeros((), device=dev)
    disc.requires_grad_(False)
    disc.train()
    perceptual = disc.perceptual_loss(g)
    disc.requires_grad_(True)
    return perceptual


def _generator_step(run: _Run, nets: _Nets, batch: tuple[torch.Tensor, ...]
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The generator's losses and optimiser step: ``(losses, generated, targets)``, the frames ``(B*T, 3, S, S)``."""
    cfg, dev = run.cfg, run.dev
    x, indiv, mel, y = batch
    b, t, _, s, _ = y.shape
    nets.generator.train()
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cfg.amp):
        g = nets.gen_train(indiv.reshape(b * t, *indiv.shape[2:]), x.reshape(b * t, *x.shape[2:]))
        y_flat = y.reshape(b * t, 3, s, s)
        l1 = F.l1_loss(g.float(), y_flat)
        sync = _sync_term(nets.expert, mel, g, (b, t, 3, s, s), cfg.syncnet_wt)
        perceptual = _perceptual_term(nets.disc, g, dev)
    w_l1 = 1.0 - cfg.syncnet_wt - cfg.disc_wt
    loss = w_l1 * l1 + cfg.syncnet_wt * sync + cfg.disc_wt * perceptual
    nets.optimizer.zero_grad(set_to_none=True)
    nets.scaler.scale(loss).backward()
    nets.scaler.step(nets.optimizer)
    nets.scaler.update()
    return {"loss": loss, "l1": l1, "sync": sync, "perceptual": perceptual}, g, y_flat


def _disc_step(run: _Run, nets: _Nets, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """The discriminator's step on real vs generated (detached) frames: ``{"disc_real", "disc_fake"}`` losses."""
    nets.disc_opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=run.dev.type, dtype=torch.float16, enabled=run.cfg.amp):
        d_real = _bce(nets.disc_train(real), 1.0)
        d_fake = _bce(nets.disc_train(fake.detach()), 0.0)
    nets.disc_scaler.scale(d_real + d_fake).backward()  # one backward: DDP-safe, same grads
    nets.disc_scaler.step(nets.disc_opt)
    nets.disc_scaler.update()
    return {"disc_real": d_real.detach().item(), "disc_fake": d_fake.detach().item()}


def _train_step(run: _Run, nets: _Nets, batch: tuple[torch.Tensor, ...]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One training step: the generator's, then (with the GAN) the discriminator's."""
    losses, g, y_flat = _generator_step(run, nets, batch)
    return losses, (_disc_step(run, nets, y_flat, g) if nets.disc is not None else {})


def _step_record(cfg: TrainConfig, step: int, epoch: int, losses: dict[str, torch.Tensor], disc: dict[str, float],
                 dt: float, t_data: float) -> dict[str, Any]:
    return {"step": step, "epoch": epoch, **{k: v.detach().item() for k, v in losses.items()}, **disc,
            "syncnet_wt": cfg.syncnet_wt, "disc_wt": cfg.disc_wt, "lr": cfg.lr, "batch_size": cfg.batch_size,
            "step_s": round(dt, 4), "data_s": round(t_data, 4)}


# --------------------------------------------------------------------------- evaluation


def _eval_due(step: int, epoch: int, prev_epoch: int, evaluate_every: int | None) -> bool:
    """Every ``evaluate_every`` steps, or (None) after each step that completes an epoch."""
    return step % evaluate_every == 0 if evaluate_every is not None else epoch > prev_epoch


def _evaluate(run: _Run, generator: nn.Module, evaluator: Callable[[nn.Module, int], dict[str, Any]], step: int) -> None:
    """Call the evaluator on the unwrapped generator, put it back in train mode, log an ``"eval"`` record."""
    t_eval = time.perf_counter()
    metrics = evaluator(generator, step)
    generator.train()
    run.emit({"event": "eval", "step": step, **{k: v for k, v in dict(metrics or {}).items() if k not in ("event", "step")},
              "eval_s": round(time.perf_counter() - t_eval, 3)})


# --------------------------------------------------------------------------- training


def _train_loop(run: _Run, nets: _Nets, sampler: GeneratorSampler, step: int, epoch: int, last_saved: Path | None,
                evaluator: Callable[[nn.Module, int], dict[str, Any]] | None, evaluate_every: int | None,
                ) -> tuple[int, int, Path | None, list[float]]:
    """Steps until ``cfg.steps``: ``(step, epoch, last checkpoint, seconds per step)``."""
    cfg, dev = run.cfg, run.dev
    times: list[float] = []
    while step < cfg.steps:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, run.rank, step])
        batch = tuple(a.to(dev, non_blocking=True) for a in sampler.batch(rng, cfg.batch_size))
        t_data = time.perf_counter() - t0
        losses, disc = _train_step(run, nets, batch)
        step += 1
        prev_epoch, epoch = epoch, step * cfg.batch_size * cfg.world_size // len(sampler)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        times.append(dt)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            last_saved = _save_checkpoint(run, nets, step, epoch) or last_saved
            run.barrier()
        run.emit(_step_record(cfg, step, epoch, losses, disc, dt, t_data))
        if evaluator is not None and run.is_main and _eval_due(step, epoch, prev_epoch, evaluate_every):
            _evaluate(run, nets.generator, evaluator, step)
    return step, epoch, last_saved, times


def train_wav2lip(
    dataset: TrainingSet | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    expert_checkpoint: str | os.PathLike[str],
    init_checkpoint: str | os.PathLike[str] | None = None,
    init_disc_checkpoint: str | os.PathLike[str] | None = None,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-4,
    syncnet_wt: float = 0.03,
    gan: bool = False,
    disc_wt: float = 0.07,
    disc_lr: float | None = None,
    device: str | torch.device | None = "auto",
    seed: int = 0,
    checkpoint_every: int = 3000,
    resume: bool = True,
    log: LogFn | None = None,
    split: str | None = "train",
    mel_offset: int = 0,
    amp: bool | None = None,
    keep_checkpoints: int | None = None,
    evaluate_every: int | None = None,
    evaluator: Callable[[nn.Module, int], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train (or continue training) a Wav2Lip generator in ``out_dir`` until ``global_step == steps``.

    See the module documentation for the recipe, the files written and resume.
    ``log`` receives every record written to ``train_log.jsonl`` (rank 0 only);
    an exception raised from it stops training (checkpoints written so far stay).
    ``keep_checkpoints`` keeps only the newest N ``checkpoint_step*`` files
    (None keeps all, as the reference does; ``last.pth`` is always kept).
    ``evaluator(generator, step)`` is called by rank 0 every ``evaluate_every``
    steps (None: once per epoch) and its metrics logged as an ``"eval"`` record
    (see the module documentation).  ``device``: :func:`lipsync.device.resolve_device`.
    """
    disc_wt = _check_settings(steps, batch_size, checkpoint_every, evaluate_every, syncnet_wt, disc_wt, gan)
    ds = dataset if isinstance(dataset, TrainingSet) else TrainingSet(dataset, split=split)
    out = Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    dev, own_group = _join_group(device, world)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp and dev.type == "cuda")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, syncnet_wt=syncnet_wt, gan=gan, disc_wt=disc_wt,
                      disc_lr=lr if disc_lr is None else disc_lr, seed=seed, checkpoint_every=checkpoint_every,
                      mel_offset=mel_offset, amp=use_amp, world_size=world)
    run = _Run(cfg, dev, rank, out, log, keep_checkpoints)
    try:
        if run.is_main:
            out.mkdir(parents=True, exist_ok=True)
        sampler = GeneratorSampler(ds, frames=cfg.frames, mel_offset=mel_offset)
        nets = _build_nets(cfg, dev, expert_checkpoint)
        step, epoch, resumed_from = _restore(nets, cfg, out, resume, init_checkpoint, init_disc_checkpoint)
        _wrap_ddp(nets, dev, world)
        run.emit(_start_record(run, step, len(sampler), resumed_from, init_checkpoint))
        last_saved = out / LAST if resumed_from is not None else None
        step, epoch, last_saved, times = _train_loop(run, nets, sampler, step, epoch, last_saved, evaluator, evaluate_every)
        return TrainResult(out, step, epoch, last_saved, resumed_from, nets.generator, nets.optimizer, nets.disc,
                           nets.disc_opt, nets.expert, times)
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def finetune(
    dataset: TrainingSet | str | os.PathLike[str],
    init_checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    steps: int,
    *,
    expert_checkpoint: str | os.PathLike[str],
    **kwargs: Any,
) -> TrainResult:
    """Fine-tune a published-format generator on our data for ``steps`` steps (fresh optimizer, step 0).

    Same options as :func:`train_wav2lip` (``gan``, ``init_disc_checkpoint``, ...);
    an interrupted fine-tune resumes from ``out_dir/last.pth``.
    """
    return train_wav2lip(dataset, out_dir, expert_checkpoint=expert_checkpoint, init_checkpoint=init_checkpoint,
                         steps=steps, **kwargs)
