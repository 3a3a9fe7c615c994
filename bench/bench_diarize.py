"""Diarization error rate and speed of the embedded (offline) diarization backend.

DER is pyannote.metrics' DiarizationErrorRate with collar 0.25 (pyannote's: 0.125 s
each side of every reference boundary) and overlapped speech scored, on

* ``pyannote-sample/sample.wav`` against ``sample.rttm`` (scored over the whole
  30 s file: there is no UEM, and the whole file counts false alarms in the
  leading silence too),
* ``pyannote-ami-debug/dev00.wav`` against ``debug.development.rttm`` (uri
  dev00) over ``debug.development.uem``,

each with the automatic speaker count and with ``num_speakers=2`` (the truth),
one configuration (``DiarizationParams()``).  For each it also prints the
overlapped speech (s, two speakers or more at once) of the reference, of the
segmentation model's speaker count and of the output turns.

Then the speaker count on one-voice recordings (talking heads and their dub
tracks, GRID clips, 5 s crops, one voice cut in pieces with pauses) and on two
controls with several voices (two talking heads in turn; four GRID speakers,
automatic and ``num_speakers=4``).

The real-time factor is diarization wall time / audio duration on CPU, models
already loaded (their one-off load time is printed apart); ``--repeat`` takes
the best of N runs.  One torch thread is the default: on a busy machine torch's
default (one per core) contends with the other processes and runs these small
LSTMs many times slower.

    .venv/bin/python bench/bench_diarize.py [--threads 1] [--repeat 1] [--step 0.2] [--no-count]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lipsync.media.audio import load_audio  # noqa: E402
from lipsync.speakers.diarize import DiarizationParams, diarize, load_segmentation_model, load_voice_encoder  # noqa: E402
from lipsync.speakers.rttm import der, read_rttm, read_uem  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default, one per core)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per file for the timing (best is kept)")
    ap.add_argument("--step", type=float, default=None, help="segmentation_step (default: DiarizationParams')")
    ap.add_argument("--no-count", action="store_true", help="skip the speaker-count table")
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
    print(f"{'file':<26} {'speakers':<9} {'DER':>7} {'conf':>6} {'miss':>6} {'FA':>6} {'found':>5} {'RTF':>7} "
          f"{'ovl ref':>7} {'ovl seg':>7} {'ovl out':>7}")
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
            seg_overlap = result.params.get("speaker_count", {}).get("overlap_seconds", float("nan"))
            print(f"{label:<26} {'auto' if num is None else num:<9} {d['diarization error rate']:7.4f} "
                  f"{d['confusion'] / total:6.3f} {d['missed detection'] / total:6.3f} {d['false alarm'] / total:6.3f} "
                  f"{len(result.speakers):5d} {best / duration:7.3f} {overlap_seconds(reference, 16000):7.2f} "
                  f"{seg_overlap:7.2f} {overlap_seconds(result.turns, result.sample_rate):7.2f}")
    print(f"overall real-time factor on CPU: {total_time / total_audio:.3f} "
          f"({total_audio:.0f} s of audio in {total_time:.1f} s)")
    if not args.no_count:
        speaker_counts(params)


def overlap_seconds(turns, rate: int) -> float:
    """Seconds during which two speakers or more speak."""
    edges = sorted([(t.start_sample, 1) for t in turns] + [(t.end_sample, -1) for t in turns])
    active, last, total = 0, 0, 0
    for at, step in edges:
        if active >= 2:
            total += at - last
        active, last = active + step, at
    return total / rate


def speaker_counts(params: DiarizationParams) -> None:
    rate = 16000
    heads = ["WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4", "deyu.wav", "fayu.wav", "japanese.wav"]
    grid = ["bbaf2n", "brbk7n", "id2_vcd_swwp2s", "lbax4n", "lbbc2a", "lwbsza", "pwij3p", "sbia1a"]
    audio = {n: load_audio(SHARED / "talking-heads" / n, rate, mono=True) for n in heads}
    audio.update({n: load_audio(SHARED / "grid-talking-faces" / f"{n}.mpg", rate, mono=True) for n in grid})

    def pause(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * rate), dtype=np.float32)

    def with_noise(wave: np.ndarray, snr_db: float) -> np.ndarray:
        out, half = wave.astype(np.float32).copy(), len(wave) // 2
        sigma = np.sqrt(float(np.mean(wave**2)) / 10 ** (snr_db / 10))
        out[half:] += np.random.default_rng(0).normal(0.0, sigma, len(out) - half).astype(np.float32)
        return out

    def band_limited(wave: np.ndarray) -> np.ndarray:
        from scipy.signal import butter, sosfilt

        out, half = wave.astype(np.float32).copy(), len(wave) // 2
        out[half:] = 2 * sosfilt(butter(6, [300, 3400], btype="band", fs=rate, output="sos"), out[half:])
        return out

    hill, aoc = audio["WDA_KatieHill_000.mp4"], audio["WDA_AlexandriaOcasioCortez_000.mp4"]
    four = [audio[k] for k in ("bbaf2n", "brbk7n", "lbax4n", "lbbc2a")]
    cases: list[tuple[str, np.ndarray, int, int | None]] = [(n, audio[n], 1, None) for n in heads + grid]
    cases += [
        ("ocasio-cortez 0-5 s", aoc[: 5 * rate], 1, None),
        ("hill 1-7 s", hill[rate : 7 * rate], 1, None),
        ("fayu 0-5 s", audio["fayu.wav"][: 5 * rate], 1, None),
        ("hill in 3 pieces, pauses", np.concatenate([hill[:40000], pause(1.5), hill[40000:80000], pause(0.8), hill[80000:]]), 1, None),
        ("ocasio-cortez in 3 pieces", np.concatenate([aoc[:32000], pause(1.2), aoc[32000:72000], pause(2.0), aoc[72000:]]), 1, None),
        ("grid man x3 (pwij3p, swwp2s)", np.concatenate([audio["pwij3p"], pause(1.5), audio["id2_vcd_swwp2s"], pause(1.0), audio["pwij3p"]]), 1, None),
        ("deyu, 2nd half + noise at 5 dB SNR", with_noise(audio["deyu.wav"], 5.0), 1, None),
        ("hill, 2nd half band-limited 300-3400 Hz", band_limited(hill), 1, None),
        ("control: aoc, hill, aoc", np.concatenate([aoc, pause(0.5), hill, pause(0.5), aoc]), 2, None),
        ("control: grid man, woman, man, woman 2", np.concatenate([audio[k][:48000] for k in ("pwij3p", "lwbsza", "pwij3p", "brbk7n")]), 3, None),
        ("control: grid men bbaf2n, sbia1a x2", np.concatenate([audio["bbaf2n"], pause(1.0), audio["sbia1a"], pause(1.0), audio["bbaf2n"], audio["sbia1a"]]), 2, None),
        ("control: 3 grid women back to back x2", np.concatenate([audio[k][:48000] for k in ("lwbsza", "brbk7n", "lbbc2a") * 2]), 3, None),
        ("control: 4 grid speakers x2", np.concatenate(four + four), 4, None),
        ("control: 4 grid speakers x2", np.concatenate(four + four), 4, 4),
    ]
    print(f"\n{'recording':<40} {'secs':>5} {'truth':>5} {'asked':>5} {'found':>5}  notes")
    wrong = 0
    for label, wave, truth, num in cases:
        result = diarize(np.asarray(wave, dtype=np.float32), rate, backend="embedded", num_speakers=num, params=params)
        found = len(result.speakers)
        wrong += found != truth
        print(f"{label:<40} {len(wave) / rate:5.1f} {truth:5d} {num or 'auto':>5} {found:5d}  "
              f"{'; '.join(result.notes) if result.notes else ''}{'  <-- wrong' if found != truth else ''}")
    print(f"speaker count right on {len(cases) - wrong} of {len(cases)} recordings")


if __name__ == "__main__":
    main()
