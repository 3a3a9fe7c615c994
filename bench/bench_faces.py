"""Face-detection throughput on 1080p frames.

Runs :class:`lipsync.faces.retinaface.RetinaFaceDetector` on ``--frames``
1920x1080 BGR frames (the skimage astronaut at 2x on a grey canvas, shifted a
little per frame) for every combination of batch size (1, 16) and ``max_size``
(640, none), after one warm-up call, and prints frames per second.

    .venv/bin/python bench/bench_faces.py [--device cpu|cuda] [--frames 32] [--threads N] [--weights PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lipsync.faces.retinaface import RetinaFaceDetector  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def frames_1080p(count: int) -> list[np.ndarray]:
    face = cv2.imread(str(SHARED / "face-photos" / "astronaut.png"), cv2.IMREAD_COLOR)
    if face is None:
        face = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    face = cv2.resize(face, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    out = []
    for i in range(count):
        canvas = np.full((1080, 1920, 3), 90, np.uint8)
        x = 400 + 8 * i % 400
        canvas[28:1052, x : x + 1024] = face
        out.append(canvas)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--weights", default=str(SHARED / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = frames_1080p(args.frames)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} frames={len(frames)} 1920x1080")
    for max_size in (640, None):
        for batch in (1, 16):
            det = RetinaFaceDetector(args.weights, device=args.device, batch_size=batch, max_size=max_size)
            det.detect(frames[:batch])  # warm-up: allocator, kernels, priors
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            found = det.detect(frames)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            faces = sum(len(d) for d in found)
            print(
                f"max_size={str(max_size):>4} batch={batch:>2}: {len(frames) / dt:7.2f} frames/s "
                f"({1000 * dt / len(frames):7.1f} ms/frame, {faces} faces in {len(frames)} frames)"
            )


if __name__ == "__main__":
    main()
