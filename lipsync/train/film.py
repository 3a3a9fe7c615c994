"""Fine-tuning the generator on the film at hand (the flow's ``options.finetune``), with a content cache.

:func:`finetune_on_film` cuts the training clips from the tracks and Light-ASD
decisions the job already computed (:func:`lipsync.train.dataset.build_film_dataset`),
fine-tunes the generator from ``init`` against the frozen ``expert``
(:func:`lipsync.train.wav2lip.finetune`) and writes the tuned generator alone
(published layout ``{"state_dict", "global_step", "global_epoch"}``, no
optimizer) to ``dst``.

The result is cached under a content key: the film's bytes, the tracks, the ASD
decisions, both weights files and every training setting.  A restarted job (or a
second job on the same film and settings) copies the tuned weights from the cache
instead of training again; a GPU fine-tune is not bit-reproducible, so without
the cache the shots rendered by the first run would not be reused either.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from dubcore.records import FaceTrack

FINETUNE_VERSION = 1

__all__ = ["FilmFinetune", "finetune_key", "finetune_on_film"]


@dataclass(frozen=True)
class FilmFinetune:
    """What :func:`finetune_on_film` did (the report's ``finetune`` section)."""

    status: str  # "trained" | "cached" | "skipped"
    checkpoint: str | None
    key: str
    steps: int = 0
    clips: int = 0
    frames: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    reason: str | None = None
    losses: tuple[dict[str, float], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["losses"] = list(self.losses)
        return d


def finetune_key(film: str | os.PathLike[str], tracks: Sequence[FaceTrack], asd: Any, init: str | os.PathLike[str],
                 expert: str | os.PathLike[str], settings: Mapping[str, Any], memo_dir: Path | None = None) -> str:
    """Hex SHA-256 of everything the tuned weights depend on."""
    from lipsync.render.cache import file_digest

    doc = {
        "version": FINETUNE_VERSION,
        "film": file_digest(film, memo_dir),
        "tracks": [t.to_dict() for t in tracks],
        "speaking": {t.track_id: [r.to_list() for r in t.speaking] for t in asd.tracks},
        "init": file_digest(init, memo_dir),
        "expert": file_digest(expert, memo_dir),
        "settings": dict(settings),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _save_generator(model: torch.nn.Module, step: int, epoch: int, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    try:
        torch.save({"state_dict": model.state_dict(), "global_step": step, "global_epoch": epoch}, tmp)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def finetune_on_film(
    film: str | os.PathLike[str], info: Any, tracks: Sequence[FaceTrack], asd: Any, audio: np.ndarray,
    dst: str | os.PathLike[str], *, init: str | os.PathLike[str], expert: str | os.PathLike[str], steps: int,
    workdir: str | os.PathLike[str], characters: Mapping[str, str] | None = None, batch_size: int = 8,
    lr: float = 1e-4, syncnet_wt: float = 0.03, gan: bool = False, disc_checkpoint: str | os.PathLike[str] | None = None,
    min_clip_frames: int = 5, seed: int = 0, device: str = "auto", cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> FilmFinetune:
    """Fine-tune ``init`` on this film's speaking faces; the tuned generator is written to ``dst``.

    ``cache_dir`` None: no cache.  Returns ``status="skipped"`` (and writes
    nothing) when the film has no speaking run of ``min_clip_frames`` frames.
    """
    from lipsync.train.data import TrainingSet
    from lipsync.train.dataset import build_film_dataset
    from lipsync.train.wav2lip import finetune

    dst = Path(dst)
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "syncnet_wt": syncnet_wt, "gan": gan,
                "disc": None if disc_checkpoint is None else str(disc_checkpoint), "min_clip_frames": min_clip_frames,
                "seed": seed}
    cache = Path(cache_dir) if cache_dir is not None else None
    key = finetune_key(film, tracks, asd, init, expert, settings, memo_dir=cache)
    hit = cache / "finetune" / f"{key}.pth" if cache is not None else None
    meta = hit.with_suffix(".json") if hit is not None else None
    if hit is not None and hit.exists() and meta is not None and meta.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hit, dst)
        prev = json.loads(meta.read_text(encoding="utf-8"))
        return FilmFinetune(**{**prev, "status": "cached", "checkpoint": str(dst), "key": key,
                               "losses": tuple(prev.get("losses", ()))})
    work = Path(workdir)
    ds_path = build_film_dataset(film, info, tracks, asd, audio, work / "dataset", characters=characters,
                                 min_clip_frames=min_clip_frames)
    ds = TrainingSet(ds_path.parent, split="train")
    frames = sum(c.frames for c in ds.clips)
    if not ds.clips:
        return FilmFinetune("skipped", None, key, reason=f"no face speaks for {min_clip_frames} frames or more in the film")
    records: list[dict[str, Any]] = []

    def keep(rec: dict[str, Any]) -> None:
        if "loss" in rec:
            records.append({k: float(rec[k]) for k in ("step", "loss", "l1", "sync") if k in rec})
        if log is not None:
            log(rec)

    res = finetune(ds, init, work / "run", steps, expert_checkpoint=expert, batch_size=batch_size, lr=lr,
                   syncnet_wt=syncnet_wt, gan=gan, init_disc_checkpoint=disc_checkpoint, device=device, seed=seed,
                   checkpoint_every=max(1, steps), log=keep, resume=False)
    model = res.generator.module if hasattr(res.generator, "module") else res.generator
    _save_generator(model, res.global_step, res.global_epoch, dst)
    out = FilmFinetune("trained", str(dst), key, steps=res.global_step, clips=len(ds.clips), frames=frames,
                       first_loss=records[0]["loss"] if records else None, last_loss=records[-1]["loss"] if records else None,
                       losses=tuple(records))
    if hit is not None and meta is not None:
        hit.parent.mkdir(parents=True, exist_ok=True)
        tmp = hit.with_name(f".{hit.name}.{os.getpid()}.partial")
        shutil.copyfile(dst, tmp)
        os.replace(tmp, hit)
        meta.write_text(json.dumps({k: v for k, v in out.to_dict().items() if k not in ("status", "checkpoint", "key")}),
                        encoding="utf-8")
    return out
