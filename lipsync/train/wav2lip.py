"""Wav2Lip generator training against a frozen lip-sync expert, with the optional visual quality GAN.

The recipe of Prajwal et al. (ACM MM 2020), written for dub-film against our
training-set format (:mod:`lipsync.train.data`):

**Samples.**  Pick a clip (uniformly among the usable clips of the split, as the
reference picks a video), a window of ``T = 5`` consecutive frames (the target)
and a second window of 5 frames starting elsewhere in the same clip (the
reference, "wrong" window).  Per target frame ``i`` the generator reads
``(6, 96, 96)``: the target crop with rows ``48:`` zeroed, then the reference
crop (BGR, ``[0, 1]``, :attr:`lipsync.models.wav2lip.Wav2Lip.contract`), and the
mel window of frame ``i``: 16 columns from :func:`lipsync.audio.mel.mel_window_start`
(the same window our inference engine feeds, so training and inference agree;
the reference's training script reads the window of frame ``i - 2`` while its
inference reads frame ``i``: ``mel_offset=-2`` reproduces its training).  The
expert reads the window of the first target frame.  Only targets whose 5 windows
lie inside the clip's real audio are drawn (no silence padding in training).
The sample of step ``s`` is drawn from ``numpy.random.default_rng([seed, rank, s])``,
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
and ``dub lipsync --checkpoint``)::

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
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lipsync.audio.mel import mel_window_start, mel_windows
from lipsync.train.data import ClipInfo, TrainingSet

_logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "GeneratorSampler", "finetune", "train_wav2lip", "LAST", "DISC_LAST"]

LAST = "last.pth"
DISC_LAST = "disc_last.pth"
LOG_FILE = "train_log.jsonl"

LogFn = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- samples


class GeneratorSampler:
    """Draws the generator's training samples from a :class:`TrainingSet` (see the module doc)."""

    def __init__(self, dataset: TrainingSet, *, frames: int = 5, mel_offset: int = 0) -> None:
        from lipsync.models.wav2lip import Wav2Lip

        self.dataset = dataset
        self.contract = Wav2Lip.contract
        self.frames = int(frames)
        self.mel_offset = int(mel_offset)
        if dataset.face_size != self.contract.face_size:
            raise ValueError(f"{dataset.root}: face_size {dataset.face_size}, the generator needs {self.contract.face_size}")
        if dataset.sample_rate != self.contract.sample_rate:
            raise ValueError(f"{dataset.root}: {dataset.sample_rate} Hz audio, the generator needs {self.contract.sample_rate}")
        self.clips: list[tuple[ClipInfo, int]] = []  # (clip, number of valid target starts)
        for clip in dataset.clips:
            starts = self._valid_starts(clip)
            # A reference window must be able to start elsewhere: at least two window positions.
            if starts > 0 and clip.frames - self.frames + 1 >= 2:
                self.clips.append((clip, starts))
        if not self.clips:
            raise ValueError(
                f"{dataset.root}: no clip long enough to train on ({len(dataset.clips)} clips; each needs at least "
                f"{self.frames + 1} frames with audio under the last window)"
            )

    def _valid_starts(self, clip: ClipInfo) -> int:
        """How many target windows ``[s, s + T)``, ``s >= max(0, -mel_offset)``, have all mel windows inside the audio."""
        cols = self.dataset.mel(clip).shape[1]
        lo, n = max(0, -self.mel_offset), 0
        for s in range(lo, clip.frames - self.frames + 1):  # the last window's start grows with s: stop at the first miss
            if mel_window_start(s + self.frames - 1 + self.mel_offset, self.dataset.fps) + self.contract.mel_step > cols:
                break
            n += 1
        return n

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x (T,6,S,S), indiv_mels (T,1,80,16), mel (1,80,16), y (T,3,S,S))`` float32."""
        clip, n_starts = self.clips[int(rng.integers(len(self.clips)))]
        lo = max(0, -self.mel_offset)
        start = lo + int(rng.integers(n_starts))
        positions = clip.frames - self.frames + 1
        wrong = int(rng.integers(positions - 1))
        wrong += wrong >= start  # any other start
        faces = self.dataset.faces(clip)
        target = np.asarray(faces[start : start + self.frames], dtype=np.float32) / 255.0  # (T,S,S,3)
        ref = np.asarray(faces[wrong : wrong + self.frames], dtype=np.float32) / 255.0
        y = target.transpose(0, 3, 1, 2)  # (T,3,S,S)
        masked = y.copy()
        masked[:, :, self.contract.mask_row :] = 0.0
        x = np.concatenate([masked, ref.transpose(0, 3, 1, 2)], axis=1)
        mel = self.dataset.mel(clip)
        indiv = mel_windows(mel, self.frames, self.dataset.fps, self.contract, start_frame=start + self.mel_offset)
        expert = mel_windows(mel, 1, self.dataset.fps, self.contract, start_frame=start)[0]
        return np.ascontiguousarray(x), indiv, expert, np.ascontiguousarray(y)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
        parts = [self.sample(rng) for _ in range(size)]
        return tuple(torch.from_numpy(np.stack([p[k] for p in parts])) for k in range(4))


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _write_log(path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- training


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
    (see the module documentation).
    """
    from lipsync.models.expert import load_expert
    from lipsync.models.wav2lip import Wav2Lip, load_wav2lip

    if steps < 0 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError("steps must be >= 0, batch_size and checkpoint_every >= 1")
    if evaluate_every is not None and evaluate_every < 1:
        raise ValueError(f"evaluate_every must be >= 1 (or None: once per epoch), got {evaluate_every}")
    if not gan:
        disc_wt = 0.0
    if syncnet_wt < 0 or disc_wt < 0 or syncnet_wt + disc_wt > 1:
        raise ValueError(f"need 0 <= syncnet_wt, disc_wt and syncnet_wt + disc_wt <= 1, got {syncnet_wt}, {disc_wt}")
    ds = dataset if isinstance(dataset, TrainingSet) else TrainingSet(dataset, split=split)
    out = Path(out_dir)

    # ---- distributed setup (torchrun)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    dev = _resolve_device(device)
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
    use_amp = (dev.type == "cuda") if amp is None else bool(amp and dev.type == "cuda")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, syncnet_wt=syncnet_wt, gan=gan, disc_wt=disc_wt,
                      disc_lr=lr if disc_lr is None else disc_lr, seed=seed, checkpoint_every=checkpoint_every,
                      mel_offset=mel_offset, amp=use_amp, world_size=world)
    is_main = rank == 0
    log_path = out / LOG_FILE if is_main else None

    def emit(record: dict[str, Any]) -> None:
        if not is_main:
            return
        _write_log(log_path, record)
        if log is not None:
            log(record)

    try:
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
        sampler = GeneratorSampler(ds, frames=cfg.frames, mel_offset=mel_offset)
        torch.manual_seed(seed)

        expert = load_expert(expert_checkpoint, dev).eval().requires_grad_(False)
        generator = Wav2Lip().to(dev)
        betas = (0.5, 0.999) if gan else (0.9, 0.999)
        optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        disc = disc_opt = disc_scaler = None
        if gan:
            from lipsync.models.wav2lip_disc import Wav2LipDiscQual, disc_state_dict

            disc = Wav2LipDiscQual().to(dev)
            disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
            disc_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

        step = epoch = 0
        resumed_from: int | None = None
        last = out / LAST
        if resume and last.exists():
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
            generator.load_state_dict(_strip_module(ckpt["state_dict"]), strict=True)
            optimizer.load_state_dict(ckpt["optimizer"])
            step, epoch = int(ckpt["global_step"]), int(ckpt.get("global_epoch", 0))
            training = ckpt.get("training") or {}
            if training.get("scaler") and use_amp:
                scaler.load_state_dict(training["scaler"])
            if "torch_rng" in training:
                torch.set_rng_state(training["torch_rng"])
            resumed_from = step
            if gan:
                dlast = out / DISC_LAST
                if dlast.exists():
                    dck = torch.load(dlast, map_location="cpu", weights_only=True)
                    disc.load_state_dict(disc_state_dict(dck), strict=True)
                    if "optimizer" in dck:
                        disc_opt.load_state_dict(dck["optimizer"])
                    if (dck.get("training") or {}).get("scaler") and use_amp:
                        disc_scaler.load_state_dict(dck["training"]["scaler"])
                    if int(dck.get("global_step", step)) != step:
                        _logger.warning("%s is at step %s, %s at %s", dlast, dck.get("global_step"), last, step)
                elif init_disc_checkpoint is not None:
                    disc.load_state_dict(disc_state_dict(torch.load(init_disc_checkpoint, map_location="cpu", weights_only=True)))
        else:
            if init_checkpoint is not None:
                generator.load_state_dict(load_wav2lip(init_checkpoint, "cpu").state_dict(), strict=True)
            if gan and init_disc_checkpoint is not None:
                disc.load_state_dict(disc_state_dict(torch.load(init_disc_checkpoint, map_location="cpu", weights_only=True)))

        gen_train: nn.Module = generator
        disc_train: nn.Module | None = disc
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            gen_train = DDP(generator, device_ids=ids)
            if gan:
                disc_train = DDP(disc, device_ids=ids)

        emit({"event": "resume" if resumed_from is not None else "start", "step": step, "time": time.time(),
              "config": cfg.to_dict(), "device": str(dev), "clips": len(sampler),
              "init_checkpoint": None if resumed_from is not None or init_checkpoint is None else os.fspath(init_checkpoint)})

        def save(step: int, epoch: int) -> Path | None:
            if not is_main:
                return None
            name = f"checkpoint_step{step:09d}.pth"
            training = {"torch_rng": torch.get_rng_state(), "scaler": scaler.state_dict() if use_amp else {},
                        "config": cfg.to_dict()}
            path = out / name
            _atomic_save({"state_dict": generator.state_dict(), "optimizer": optimizer.state_dict(),
                          "global_step": step, "global_epoch": epoch, "training": training}, path)
            if gan:
                dpath = out / f"disc_{name}"
                _atomic_save({"state_dict": disc.state_dict(), "optimizer": disc_opt.state_dict(), "global_step": step,
                              "global_epoch": epoch,
                              "training": {"scaler": disc_scaler.state_dict() if use_amp else {}}}, dpath)
                _atomic_link(dpath, out / DISC_LAST)
            _atomic_link(path, out / LAST)  # last.pth last: it names a step whose disc file exists
            if keep_checkpoints:
                olds = sorted(out.glob("checkpoint_step*.pth"))[:-keep_checkpoints]
                for old in olds:
                    old.unlink(missing_ok=True)
                    (out / f"disc_{old.name}").unlink(missing_ok=True)
            return path

        def barrier() -> None:
            if world > 1:
                import torch.distributed as dist

                dist.barrier()

        last_saved: Path | None = last if resumed_from is not None else None
        samples_per_epoch = len(sampler)
        times: list[float] = []
        b, t = batch_size, cfg.frames
        s = Wav2Lip.contract.face_size
        w_l1 = 1.0 - syncnet_wt - disc_wt
        while step < steps:
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, rank, step])
            x, indiv, mel, y = (a.to(dev, non_blocking=True) for a in sampler.batch(rng, b))
            t_data = time.perf_counter() - t0
            generator.train()
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                g = gen_train(indiv.reshape(b * t, *indiv.shape[2:]), x.reshape(b * t, *x.shape[2:]))
                y_flat = y.reshape(b * t, 3, s, s)
                l1 = F.l1_loss(g.float(), y_flat)
                if syncnet_wt > 0:
                    sync = sync_loss(expert, mel, g.view(b, t, 3, s, s))
                else:
                    with torch.no_grad():
                        sync = sync_loss(expert, mel, g.detach().view(b, t, 3, s, s))
                if gan:
                    disc.requires_grad_(False)  # the generator's adversarial pass: no grads into D
                    disc.train()
                    perceptual = disc.perceptual_loss(g)
                    disc.requires_grad_(True)
                else:
                    perceptual = torch.zeros((), device=dev)
            loss = w_l1 * l1 + syncnet_wt * sync + disc_wt * perceptual
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

            record: dict[str, Any] = {}
            if gan:
                disc_opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                    d_real = _bce(disc_train(y_flat), 1.0)
                    d_fake = _bce(disc_train(g.detach()), 0.0)
                disc_scaler.scale(d_real + d_fake).backward()  # one backward: DDP-safe, same grads
                disc_scaler.step(disc_opt)
                disc_scaler.update()
                record.update(disc_real=d_real.detach().item(), disc_fake=d_fake.detach().item())

            step += 1
            prev_epoch, epoch = epoch, step * b * world // samples_per_epoch
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
            times.append(dt)
            record = {"step": step, "epoch": epoch, "loss": loss.detach().item(), "l1": l1.detach().item(),
                      "sync": sync.detach().item(), "perceptual": perceptual.detach().item(), **record, "syncnet_wt": syncnet_wt, "disc_wt": disc_wt,
                      "lr": lr, "batch_size": b, "step_s": round(dt, 4), "data_s": round(t_data, 4)}
            if step % checkpoint_every == 0 or step == steps:
                last_saved = save(step, epoch) or last_saved
                barrier()
            emit(record)
            if evaluator is not None and is_main and (
                step % evaluate_every == 0 if evaluate_every is not None else epoch > prev_epoch
            ):
                t_eval = time.perf_counter()
                metrics = evaluator(generator, step)
                generator.train()
                emit({"event": "eval", "step": step, **{k: v for k, v in dict(metrics or {}).items() if k not in ("event", "step")},
                      "eval_s": round(time.perf_counter() - t_eval, 3)})
        return TrainResult(out, step, epoch, last_saved, resumed_from, generator, optimizer, disc, disc_opt, expert, times)
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
