"""Wav2Lip generator throughput (frames per second), random weights.

Runs :class:`lipsync.models.wav2lip.Wav2Lip` on random inputs of the contract's
shapes ((N, 6, 96, 96) faces, (N, 1, 80, 16) mel windows) at each batch size,
after warm-up calls, under ``torch.inference_mode``, and prints frames per second
(the mel features and face crops are not included: generator only).

    .venv/bin/python bench/bench_wav2lip.py [--device cpu|cuda] [--batches 1 16 64] [--seconds 5] [--threads N] [--half]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lipsync.models.wav2lip import Wav2Lip  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model: Wav2Lip, device: torch.device, batch: int, seconds: float, dtype: torch.dtype) -> tuple[float, int]:
    """Frames per second at ``batch`` over at least ``seconds`` (and at least 2 calls)."""
    c = model.contract
    g = torch.Generator().manual_seed(batch)
    audio = torch.randn((batch, *c.audio_shape), generator=g).to(device, dtype)
    face = torch.rand((batch, *c.face_shape), generator=g).to(device, dtype)
    with torch.inference_mode():
        for _ in range(2 if device.type == "cpu" else 5):  # warm-up: allocator, kernels, cuDNN autotune
            model(audio, face)
        _sync(device)
        calls, start = 0, time.perf_counter()
        while True:
            model(audio, face)
            calls += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if calls >= 2 and elapsed >= seconds:
                break
    return calls * batch / elapsed, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per batch size")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--half", action="store_true", help="float16 weights and inputs (CUDA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if args.half else torch.float32
    torch.manual_seed(0)
    model = Wav2Lip().to(device, dtype).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"Wav2Lip generator, random weights: device={device} ({name}) dtype={dtype} torch={torch.__version__}")
    for batch in args.batches:
        fps, calls = bench(model, device, batch, args.seconds, dtype)
        print(f"batch {batch:4d}: {fps:9.1f} frames/s  ({1000 * batch / fps:8.1f} ms per call, {calls} timed calls)")


if __name__ == "__main__":
    main()
