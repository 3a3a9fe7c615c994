"""Training throughput: expert and Wav2Lip generator steps per second (generator with and without the GAN).

Builds a synthetic training set in the documented format (random crops, noise
audio) and a random expert in a temporary folder, runs
:func:`lipsync.train.wav2lip.train_wav2lip` for warm-up + timed steps at each
batch size, and prints the median step time (data drawing, forward, backward and
optimiser steps; checkpoint writing is not counted).

    .venv/bin/python bench/bench_train.py [--device auto|cpu|cuda] [--batches 4 16] [--steps 5] [--warmup 2]
        [--expert-batches 16 64] [--only expert|generator]

The expert runs :func:`lipsync.train.expert.train_expert` (the full-width
``SyncNet_color``; mixed precision on CUDA) on the same synthetic set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _synthetic_dataset(root: Path, clips: int = 4, frames: int = 100, seed: int = 0) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(clips):
        cid = f"c{i:03d}"
        np.save(root / "clips" / f"{cid}.faces.npy", rng.integers(0, 256, (frames, 96, 96, 3), dtype=np.uint8))
        sf.write(root / "clips" / f"{cid}.wav", (rng.standard_normal(frames * 640) * 3000).astype(np.int16), 16000,
                 subtype="PCM_16")
        entries.append({"id": cid, "film": "bench", "character": "x", "split": "train", "frames": frames,
                        "faces": f"clips/{cid}.faces.npy", "audio": f"clips/{cid}.wav", "source": {}})
    doc = {"schema": "dub-film/dataset@1", "fps": 25, "sample_rate": 16000, "face_size": 96, "clips": entries,
           "counts": {}, "hours": {}}
    (root / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def bench_generator(device: str = "auto", batches: tuple[int, ...] = (4, 16), steps: int = 5, warmup: int = 2) -> list[dict]:
    """Generator training steps/s (and 5-frame samples/s) without and with the GAN, per batch size."""
    from lipsync.models.expert import SyncNetColor
    from lipsync.train.wav2lip import train_wav2lip

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-w2l-") as tmp:
        tmp_path = Path(tmp)
        ds = _synthetic_dataset(tmp_path / "ds")
        torch.manual_seed(0)
        expert = tmp_path / "expert.pth"
        torch.save({"state_dict": SyncNetColor().state_dict(), "global_step": 0}, expert)
        for gan in (False, True):
            for b in batches:
                out = tmp_path / f"run-{int(gan)}-{b}"
                t0 = time.perf_counter()
                res = train_wav2lip(ds, out, expert_checkpoint=expert, steps=warmup + steps, batch_size=b, gan=gan,
                                    device=device, seed=0, checkpoint_every=10**9, resume=False)
                wall = time.perf_counter() - t0
                timed = res.step_seconds[warmup:]
                med = float(np.median(timed))
                row = {"gan": gan, "batch": b, "device": str(next(res.generator.parameters()).device),
                       "step_s": round(med, 4), "steps_per_s": round(1 / med, 3), "samples_per_s": round(b / med, 2),
                       "frames_per_s": round(5 * b / med, 1), "timed_steps": len(timed), "wall_s": round(wall, 1)}
                if torch.cuda.is_available():
                    row["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    torch.cuda.reset_peak_memory_stats()
                print(json.dumps(row), flush=True)
                rows.append(row)
                for f in out.glob("*.pth"):
                    f.unlink()
    return rows


def bench_expert(device: str = "auto", batches: tuple[int, ...] = (16, 64), steps: int = 5, warmup: int = 2,
                 width: float = 1.0) -> list[dict]:
    """Expert training steps/s (and pairs/s) per batch size, at ``width`` (1.0: the published network)."""
    from lipsync.train.expert import train_expert

    dev = None if device == "auto" else device
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-expert-") as tmp:
        ds = _synthetic_dataset(Path(tmp) / "ds")
        for b in batches:
            out = Path(tmp) / f"expert-{b}"
            # Warm-up run first (allocator, cuDNN autotune), then a resumed run whose rate is timed alone.
            train_expert(ds, out, steps=warmup, batch_size=b, device=dev, checkpoint_every=10**9, eval_samples=0, width=width)
            res = train_expert(ds, out, steps=warmup + steps, batch_size=b, device=dev, checkpoint_every=10**9,
                               eval_samples=0, width=width)
            sps = res.steps_per_second or float("nan")
            row = {"model": "expert", "width": width, "batch": b, "device": res.device, "steps_per_s": round(sps, 3),
                   "pairs_per_s": round(sps * b, 1), "timed_steps": res.steps_run}
            if torch.cuda.is_available():
                row["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                torch.cuda.reset_peak_memory_stats()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cuDNN autotune)")
    ap.add_argument("--expert-batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--expert-width", type=float, default=1.0)
    ap.add_argument("--only", choices=["expert", "generator"], default=None)
    args = ap.parse_args()
    if args.only != "generator":
        bench_expert(args.device, tuple(args.expert_batches), args.steps, args.warmup, args.expert_width)
    if args.only != "expert":
        bench_generator(args.device, tuple(args.batches), args.steps, args.warmup)


if __name__ == "__main__":
    main()
