"""Diarization error rate and speed of the embedded (offline) diarization backend.

DER is pyannote.metrics' DiarizationErrorRate with collar 0.25 (pyannote's: 0.125 s
each side of every reference boundary) and overlapped speech scored, on

* ``pyannote-sample/sample.wav`` against ``sample.rttm`` (scored over the whole
  30 s file: there is no UEM, and the whole file counts false alarms in the
  leading silence too),
* ``pyannote-ami-debug/dev00.wav`` against ``debug.development.rttm`` (uri
  dev00) over ``debug.development.uem``,

each with the automatic speaker count and with ``num_speakers=2`` (the truth).
The real-time factor is diarization wall time / audio duration on CPU, models
already loaded (their one-off load time is printed apart); ``--repeat`` takes
the best of N runs.  One torch thread is the default: on a busy machine torch's
default (one per core) contends with the other processes and runs these small
LSTMs many times slower.

    .venv/bin/python bench/bench_diarize.py [--threads 1] [--repeat 1] [--step 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lipsync.speakers.diarize import DiarizationParams, diarize, load_segmentation_model, load_voice_encoder  # noqa: E402
from lipsync.speakers.rttm import der, read_rttm, read_uem  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default, one per core)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per file for the timing (best is kept)")
    ap.add_argument("--step", type=float, default=None, help="segmentation_step (default: DiarizationParams')")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = DiarizationParams()
    if args.step:
        params = replace(params, segmentation_step=args.step)

    t0 = time.perf_counter()
    load_segmentation_model("cpu")
    load_voice_encoder("cpu")
    print(f"models loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}; "
          f"segmentation_step {params.segmentation_step}")

    cases = [
        ("pyannote-sample", SHARED / "pyannote-sample" / "sample.wav", SHARED / "pyannote-sample" / "sample.rttm",
         "sample", None),
        ("pyannote-ami-debug/dev00", SHARED / "pyannote-ami-debug" / "dev00.wav",
         SHARED / "pyannote-ami-debug" / "debug.development.rttm", "dev00",
         SHARED / "pyannote-ami-debug" / "debug.development.uem"),
    ]
    total_audio = total_time = 0.0
    print(f"{'file':<26} {'speakers':<9} {'DER':>7} {'conf':>6} {'miss':>6} {'FA':>6} {'found':>5} {'RTF':>7}")
    for label, wav, rttm, uri, uem_path in cases:
        duration = sf.info(str(wav)).duration
        uem = read_uem(uem_path, uri=uri) if uem_path else (0.0, duration)
        reference = read_rttm(rttm, 16000, uri=uri)
        for num in (None, 2):
            best = float("inf")
            for _ in range(max(1, args.repeat)):
                start = time.perf_counter()
                result = diarize(wav, backend="embedded", num_speakers=num, params=params)
                best = min(best, time.perf_counter() - start)
            total_audio += duration
            total_time += best
            d = der(reference, result, collar=0.25, skip_overlap=False, uem=uem, detailed=True)
            total = d["total"] or 1.0
            print(f"{label:<26} {'auto' if num is None else num:<9} {d['diarization error rate']:7.4f} "
                  f"{d['confusion'] / total:6.3f} {d['missed detection'] / total:6.3f} {d['false alarm'] / total:6.3f} "
                  f"{len(result.speakers):5d} {best / duration:7.3f}")
    print(f"overall real-time factor on CPU: {total_time / total_audio:.3f} "
          f"({total_audio:.0f} s of audio in {total_time:.1f} s)")


if __name__ == "__main__":
    main()
