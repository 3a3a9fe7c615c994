"""Training the expert lip-sync discriminator (:class:`lipsync.models.expert.SyncNetColor`) on our own footage.

The recipe is Wav2Lip's ``color_syncnet_train.py`` (Prajwal et al. 2020), on a
:class:`lipsync.train.data.TrainingSet`:

* **Samples** (:class:`ExpertSampler`).  A clip is drawn with probability
  proportional to its number of 5-frame windows, then a start frame ``i``
  (``0 <= i <= N - 5``).  Face input: the lower halves (rows ``48:96``) of crops
  ``i .. i+4``, concatenated on channels in time order, BGR, scaled to ``[0, 1]``:
  ``(15, 48, 96)``.  Audio input: the 16 mel columns starting at
  :func:`lipsync.audio.mel.mel_window_start` of frame ``j`` (padded with the mel
  of silence past the end of the audio, as everywhere in dub-film), ``(1, 80, 16)``.
  In sync (label 1): ``j = i``.  Off sync (label 0): ``j`` from the same clip with
  ``|j - i| >= min_offset`` (5 frames = 200 ms, one whole window, by default).
  Every batch is exactly half in sync, half off sync, in random order.
* **Loss**: the reference's rule: ``d = cosine_similarity(audio_emb, face_emb)``
  and ``BCELoss(d, y)``.  Both embeddings come out of a ReLU, so ``d`` is already in
  ``[0, 1]``; it is clamped to that range only to absorb float rounding (the clamp
  is the identity, gradient included, everywhere else).  The loss is always
  computed in float32, outside autocast.
* **Optimiser**: Adam, ``lr`` 1e-4 by default (the reference's ``syncnet_lr``).
* **Mixed precision** on CUDA: ``torch.autocast`` in bfloat16 where the GPU
  supports it (no loss scaling needed), else float16 with a ``GradScaler`` (whose
  state is checkpointed too).  CPU runs in float32.

Checkpoints (rank 0 only) are the published layout ``{"state_dict", "optimizer",
"global_step", "global_epoch"}`` -- so ``lipsync_expert.pth`` and ours are
interchangeable -- plus ``"rng"`` (torch CPU/CUDA generator states), ``"scaler"``
and ``"config"``.  They are written to a temporary name and ``os.replace``-d to
``OUT/checkpoint_step{N:09d}.pth`` and ``OUT/last.pth``: a kill at any moment leaves
the previous ``last.pth`` intact.  ``global_step`` counts optimiser steps;
``global_epoch`` counts passes over the training windows (samples seen divided
by the number of 5-frame windows in the train split).

Resume: when ``OUT/last.pth`` exists (and ``resume=True``), the weights,
optimiser, scaler and RNG states and the step counter are restored and training
continues to ``steps`` (a total, not an increment).  The batch drawn at step
``s`` depends only on ``(seed, rank, s)`` (a counter-based numpy stream), so a
resumed run sees exactly the batches the uninterrupted run would have seen: on
the CPU a resumed run ends with the same weights, bit for bit.  Log lines past
the restored step (written by the killed run after its last checkpoint) are
dropped from ``train_log.jsonl``.

Data parallel: launched by ``torchrun --nproc-per-node G -m dub train expert ...``
(``WORLD_SIZE > 1`` in the environment), every process joins the process group
(NCCL on CUDA, Gloo on CPU), uses ``cuda:LOCAL_RANK``, wraps the model in
``DistributedDataParallel`` and draws its own batches (stream ``(seed, rank,
step)``); ``batch_size`` is per process.  BatchNorm statistics stay per process,
as with the reference's DataParallel.  Rank 0 writes checkpoints and the log and
evaluates; the others wait at a barrier.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lipsync.audio.mel import mel_windows
from lipsync.device import resolve_device
from lipsync.models.expert import ExpertContract, SyncNetColor, expert_state_dict
from lipsync.train.data import ClipInfo, TrainingSet

__all__ = [
    "ExpertSampler",
    "ExpertTrainResult",
    "expert_loss",
    "sync_accuracy",
    "train_expert",
]

LAST = "last.pth"
LOG = "train_log.jsonl"


# --------------------------------------------------------------------------- samples


class ExpertSampler:
    """Balanced in-sync / off-sync expert samples from the clips of one split of a :class:`TrainingSet`.

    Clips shorter than ``frames + min_offset`` frames (no off-sync window possible)
    are skipped.
    """

    def __init__(self, dataset: TrainingSet, split: str | None = "train", *, min_offset: int = 5,
                 contract: ExpertContract = SyncNetColor.contract) -> None:
        if dataset.face_size != contract.face_size:
            raise ValueError(f"{dataset.root}: face crops are {dataset.face_size} px, the expert reads {contract.face_size} px")
        if dataset.sample_rate != contract.sample_rate:
            raise ValueError(f"{dataset.root}: audio at {dataset.sample_rate} Hz, the expert reads {contract.sample_rate} Hz")
        if min_offset < 1:
            raise ValueError(f"min_offset must be >= 1 frame, got {min_offset}")
        self.dataset, self.split, self.min_offset, self.contract = dataset, split, min_offset, contract
        T = contract.frames
        self.clips: list[ClipInfo] = [c for c in dataset.clips if (split is None or c.split == split)
                                      and c.frames - T >= min_offset]
        self.windows = np.array([c.frames - T + 1 for c in self.clips], dtype=np.int64)

    def __len__(self) -> int:
        """Number of 5-frame windows (in-sync samples) available."""
        return int(self.windows.sum())

    def face_window(self, clip: ClipInfo, i: int) -> np.ndarray:
        """``(15, 48, 96)`` float32 in [0, 1]: lower halves of crops ``i .. i+4`` stacked on channels."""
        c = self.contract
        crops = np.asarray(self.dataset.faces(clip)[i : i + c.frames, c.lower_row :])  # (5, 48, 96, 3) BGR
        if crops.shape[0] != c.frames:
            raise IndexError(f"{clip.id}: frames {i}..{i + c.frames - 1} past the end ({clip.frames} frames)")
        return (crops.transpose(0, 3, 1, 2).reshape(c.face_channels, *crops.shape[1:3]).astype(np.float32) / 255.0)

    def mel_window(self, clip: ClipInfo, j: int) -> np.ndarray:
        """``(1, 80, 16)`` float32: the mel window of frame ``j``."""
        return mel_windows(self.dataset.mel(clip), 1, self.dataset.fps, self.contract, start_frame=j)[0]

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``faces (B,15,48,96)``, ``mels (B,1,80,16)``, ``labels (B,1)`` float32; exactly ``B // 2`` in sync
        (``B`` odd: the extra one is drawn at random)."""
        if not self.clips:
            raise ValueError(f"{self.dataset.root}: no {self.split or 'any'} clip has {self.contract.frames + self.min_offset} "
                             f"frames or more; nothing to train the expert on")
        labels = np.zeros(batch_size, dtype=np.float32)
        labels[: batch_size // 2] = 1.0
        if batch_size % 2:
            labels[-1] = float(rng.integers(2))
        labels = rng.permutation(labels)
        p = self.windows / self.windows.sum()
        faces, mels = [], []
        for y in labels:
            k = int(rng.choice(len(self.clips), p=p))
            clip, n = self.clips[k], int(self.windows[k])
            i = int(rng.integers(n))
            j = i
            if y == 0.0:
                far = np.concatenate([np.arange(0, max(0, i - self.min_offset + 1)), np.arange(i + self.min_offset, n)])
                j = int(rng.choice(far))
            faces.append(self.face_window(clip, i))
            mels.append(self.mel_window(clip, j))
        return np.stack(faces), np.stack(mels), labels[:, None].copy()


def batch_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """The numpy stream of batch ``step`` on ``rank``: a function of the three numbers only (resumable)."""
    return np.random.default_rng([int(seed), int(rank), int(step)])


# --------------------------------------------------------------------------- loss and accuracy


def expert_loss(audio_emb: torch.Tensor, face_emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(BCE loss, similarity (B,))``: the reference's ``BCELoss(cosine_similarity(a, v), y)``, in float32."""
    d = F.cosine_similarity(audio_emb.float(), face_emb.float()).clamp(0.0, 1.0)
    return F.binary_cross_entropy(d.unsqueeze(1), labels.float()), d


@torch.no_grad()
def sync_accuracy(model: nn.Module, dataset: TrainingSet, split: str | None = "train", n: int = 256, *,
                  seed: int = 1234, device: str | torch.device = "cpu", batch_size: int = 64,
                  min_offset: int = 5) -> float | None:
    """In-sync vs off-sync classification accuracy of ``model`` on ``n`` balanced samples of ``split``.

    A sample is called in sync when the similarity is above 0.5.  The model is
    evaluated in eval mode (BatchNorm running statistics) and put back in its
    previous mode.  None when the split has no usable clip.
    """
    sampler = ExpertSampler(dataset, split, min_offset=min_offset)
    if not sampler.clips or n <= 0:
        return None
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for b, start in enumerate(range(0, n, batch_size)):
            faces, mels, labels = sampler.draw(np.random.default_rng([seed, b]), min(batch_size, n - start))
            a, v = model(torch.from_numpy(mels).to(device), torch.from_numpy(faces).to(device))
            d = F.cosine_similarity(a.float(), v.float()).cpu().numpy()
            correct += int(((d > 0.5) == (labels[:, 0] > 0.5)).sum())
            total += len(d)
    finally:
        model.train(was_training)
    return correct / total


# --------------------------------------------------------------------------- training


@dataclass
class ExpertTrainResult:
    """What :func:`train_expert` did."""

    out_dir: str
    global_step: int
    global_epoch: int
    resumed_from: int | None
    steps_run: int
    final_loss: float | None
    train_accuracy: float | None
    val_accuracy: float | None
    last_checkpoint: str | None
    seconds: float
    steps_per_second: float | None
    device: str
    world_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written by a run killed after its last checkpoint)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def _dist_setup(device: str) -> tuple[int, int, str, bool]:
    """``(rank, world, device, created)``: joins the torchrun process group when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), device, created


def _amp_settings(device: str, amp: bool | None) -> tuple[bool, torch.dtype, bool]:
    """``(enabled, dtype, use_scaler)``: autocast on CUDA only; bf16 when supported, else fp16 + GradScaler."""
    on_cuda = device.startswith("cuda")
    enabled = on_cuda if amp is None else (amp and on_cuda)
    if not enabled:
        return False, torch.float32, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: str, *, amp: bool | None = None,
              scaler: Any = None) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[float, float]]:
    """One training step ``(faces, mels, labels) -> (loss, batch accuracy)`` (also used by the benchmark)."""
    enabled, dtype, _ = _amp_settings(device, amp)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def step(faces: torch.Tensor, mels: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=dtype, enabled=enabled):
            a, v = model(mels, faces)
        loss, d = expert_loss(a, v, labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        acc = ((d.detach() > 0.5) == (labels[:, 0] > 0.5)).float().mean()
        return float(loss.detach()), float(acc)

    return step


def train_expert(
    dataset: TrainingSet | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    steps: int = 100_000,
    batch_size: int = 64,
    lr: float = 1e-4,
    device: str | None = None,
    seed: int = 0,
    checkpoint_every: int = 3000,
    resume: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 10,
    min_offset: int = 5,
    eval_samples: int = 256,
    amp: bool | None = None,
    init: str | os.PathLike[str] | None = None,
    width: float = 1.0,
) -> ExpertTrainResult:
    """Train :class:`SyncNetColor` for ``steps`` optimiser steps in total (see the module text).

    ``dataset``: a :class:`TrainingSet` or its folder.  ``device`` None or ``"auto"``:
    CUDA when available (:func:`lipsync.device.resolve_device`).  ``log`` is called
    with every log record (one per ``log_every`` steps, the same dict written to
    ``train_log.jsonl``: ``step``, ``loss``, ``accuracy``, ``epoch``, ``lr``,
    ``elapsed_s``) and once more with the final
    ``{"event": "done", ...}``.  ``init``: start a fresh run from these weights (e.g. the
    published ``lipsync_expert.pth``) instead of a random initialisation; ignored
    when resuming.  ``eval_samples`` balanced samples per split are classified at
    the end (:func:`sync_accuracy`).  ``width`` < 1 trains a narrower network of
    the same layout (fast experiments and tests; the published size is 1.0).
    """
    t0 = time.perf_counter()
    ds = dataset if isinstance(dataset, TrainingSet) else TrainingSet(dataset)
    out = Path(out_dir)
    device = resolve_device(device)
    rank, world, device, created = _dist_setup(device)
    amp_on, _, use_scaler = _amp_settings(device, amp)
    try:
        sampler = ExpertSampler(ds, "train", min_offset=min_offset)
        if not sampler.clips:
            raise ValueError(f"{ds.root}: no training clip of {sampler.contract.frames + min_offset} frames or more")
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        model = SyncNetColor(width).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        step_no, resumed_from = 0, None
        last = out / LAST
        if resume and last.exists():
            ck = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(expert_state_dict(ck, str(last)), strict=True)
            optimizer.load_state_dict(ck["optimizer"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            _set_rng_state(ck.get("rng") or {})
            step_no = resumed_from = int(ck["global_step"])
            if rank == 0:
                _truncate_log(out / LOG, step_no)
        elif init is not None:
            ck = torch.load(os.fspath(init), map_location="cpu", weights_only=True)
            model.load_state_dict(expert_state_dict(ck, os.fspath(init)), strict=True)
        for group in optimizer.param_groups:  # a resumed run may be given another lr
            group["lr"] = lr

        train_model: nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
        step_fn = make_step(train_model, optimizer, device, amp=amp, scaler=scaler)
        windows = max(1, len(sampler))
        config = {"batch_size": batch_size, "world_size": world, "lr": lr, "seed": seed, "min_offset": min_offset,
                  "amp": amp_on, "width": float(width), "dataset": str(ds.root)}

        def epoch_of(s: int) -> int:
            return s * batch_size * world // windows

        def save(s: int) -> Path:
            ck = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "global_step": s,
                  "global_epoch": epoch_of(s), "rng": _rng_state(), "scaler": scaler.state_dict() if scaler else {},
                  "config": config}
            path = out / f"checkpoint_step{s:09d}.pth"
            _atomic_save(ck, path)
            _atomic_save(ck, last)
            return path

        losses: list[float] = []
        last_ck: Path | None = last if resumed_from is not None else None
        run_from, t_run = step_no, time.perf_counter()
        with (out / LOG).open("a", encoding="utf-8") if rank == 0 else _nullfile() as logf:
            while step_no < steps:
                faces, mels, labels = sampler.draw(batch_rng(seed, rank, step_no), batch_size)
                loss, acc = step_fn(torch.from_numpy(faces).to(device, non_blocking=True),
                                    torch.from_numpy(mels).to(device, non_blocking=True),
                                    torch.from_numpy(labels).to(device, non_blocking=True))
                step_no += 1
                losses.append(loss)
                if rank == 0:
                    if step_no % log_every == 0 or step_no == steps:
                        rec = {"step": step_no, "loss": loss, "accuracy": acc, "epoch": epoch_of(step_no), "lr": lr,
                               "elapsed_s": round(time.perf_counter() - t0, 3)}
                        logf.write(json.dumps(rec) + "\n")
                        logf.flush()
                        if log is not None:
                            log(rec)
                    if step_no % checkpoint_every == 0 or step_no == steps:
                        last_ck = save(step_no)
                if world > 1 and (step_no % checkpoint_every == 0 or step_no == steps):
                    import torch.distributed as dist

                    dist.barrier()
        run_s = time.perf_counter() - t_run
        ran = step_no - run_from
        train_acc = val_acc = None
        if rank == 0:
            train_acc = sync_accuracy(model, ds, "train", eval_samples, device=device, min_offset=min_offset)
            val_acc = sync_accuracy(model, ds, "val", eval_samples, device=device, min_offset=min_offset)
        tail = losses[-min(len(losses), max(1, log_every)):]
        result = ExpertTrainResult(
            out_dir=str(out), global_step=step_no, global_epoch=epoch_of(step_no), resumed_from=resumed_from,
            steps_run=ran, final_loss=(sum(tail) / len(tail)) if tail else None, train_accuracy=train_acc,
            val_accuracy=val_acc, last_checkpoint=str(last_ck) if last_ck else None,
            seconds=time.perf_counter() - t0, steps_per_second=(ran / run_s) if ran and run_s > 0 else None,
            device=device, world_size=world,
        )
        if rank == 0 and log is not None:
            log({"event": "done", **result.to_dict()})
        return result
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


class _nullfile:
    """A context manager standing in for the log file on ranks other than 0."""

    def __enter__(self) -> "_nullfile":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def write(self, _: str) -> None:
        return None

    def flush(self) -> None:
        return None


def iter_log(out_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of ``OUT/train_log.jsonl``, in order."""
    path = Path(out_dir) / LOG
    if path.exists():
        for ln in path.read_text(encoding="utf-8").splitlines():
            if ln.strip():
                yield json.loads(ln)

