#!/usr/bin/env bash
# GPU figures in one short run on a machine with CUDA (the device tool, or any GPU box):
#   bash bench/device_gpu.sh 2>&1 | tee gpu-bench.txt
# Prints Wav2Lip generator fps at batch 1/16/64, streamed lip-sync fps, RetinaFace fps on 1080p,
# and training steps/s: the expert at batch 16/64 and the generator (with and without the GAN) at batch 4/16.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY bench/bench_wav2lip.py --device cuda
$PY bench/bench_lipsync.py --seconds 20 --generator wav2lip --device cuda
$PY bench/bench_faces.py --device cuda --frames 64
$PY bench/bench_train.py --device cuda --steps 10 --warmup 3
