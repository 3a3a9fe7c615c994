#!/usr/bin/env bash
# GPU figures in one short run on a machine with CUDA (the device tool, or any GPU box):
#   bash bench/device_gpu.sh 2>&1 | tee gpu-bench.txt
# Prints Wav2Lip generator fps at batch 1/16/64; then bench_lipsync on CUDA at the engine's batch (128):
# generator alone, decode / paste / encode alone (fps per stage) and `dub lipsync` end to end, with
# NVDEC (-hwaccel cuda) and NVENC (h264_nvenc) where this ffmpeg has them, else software; RetinaFace
# fps on 1080p; training steps/s (expert at batch 16/64, generator with and without the GAN at 4/16).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
ffmpeg -hide_banner -version | head -1
HW=()
if ffmpeg -hide_banner -hwaccels 2>/dev/null | grep -qx cuda; then HW+=(--hwaccel cuda); echo "NVDEC: ffmpeg -hwaccel cuda"; else echo "NVDEC: not in this ffmpeg (software decode)"; fi
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q h264_nvenc; then HW+=(--encoder h264_nvenc); echo "NVENC: h264_nvenc (stage figure)"; else echo "NVENC: not in this ffmpeg (libx264)"; fi
$PY bench/bench_wav2lip.py --device cuda
$PY bench/bench_lipsync.py --device cuda --sizes 1280x720 1920x1080 --seconds 10 60 --gen-seconds 10 "${HW[@]}"
$PY bench/bench_faces.py --device cuda --frames 64
$PY bench/bench_train.py --device cuda --steps 10 --warmup 3
