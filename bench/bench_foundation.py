"""Foundation benchmark: shot detection and reassembly speed, and peak memory of `dub run`.

Generates synthetic 1080p films (24 fps, a hard cut every 5 s) of 1 and 10 minutes,
then prints, for each:
  - shot detection frames/second (decode once at 256 px wide, content + fade),
  - reassembly frames/second (decode + one encode; x264 preset given by --preset),
  - peak RSS of a whole `dub run` (the process and every child, Prefect's local
    server included, sampled every 100 ms); faces are detected at 320 px.

    .venv/bin/python bench/bench_foundation.py [--minutes 1 10] [--preset veryfast]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubcore.manifest import DubJob, DubTracks, JobOptions, write_manifest  # noqa: E402
from dubcore.timebase import samples_for_frames  # noqa: E402
from lipsync.media import EncodeSettings, probe  # noqa: E402
from lipsync.media.assemble import assemble  # noqa: E402
from lipsync.media.synth import make_film, write_tone  # noqa: E402
from lipsync.shots import detect_shots  # noqa: E402


def _tree_rss_kb(pid: int) -> int:
    """Sum of VmRSS over ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def peak_rss_of(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    start = time.perf_counter()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
    return peak, time.perf_counter() - start, proc.returncode


def run(minutes: int, preset: str, work: Path, store: Path) -> dict[str, float]:
    fps = Fraction(24)
    total = minutes * 60 * 24
    shot = 5 * 24
    lengths = [shot] * (total // shot) + ([total % shot] if total % shot else [])
    t0 = time.perf_counter()
    film = make_film(work / f"film_{minutes}m.mp4", lengths, fps=fps, size=(1920, 1080), crf=23, preset="ultrafast")
    gen = time.perf_counter() - t0
    info = probe(film.path)

    t0 = time.perf_counter()
    shots = detect_shots(film.path, info=info)
    det = time.perf_counter() - t0
    assert shots.cuts == list(film.cuts), "benchmark film: cuts not found exactly"

    n = samples_for_frames(total, fps, 48000)
    write_tone(work / "dia.wav", n, 48000, freq=300.0)
    t0 = time.perf_counter()
    assemble(film.path, shots, work / "out.mp4", audio=work / "dia.wav", settings=EncodeSettings(preset=preset), info=info)
    asm = time.perf_counter() - t0

    job = DubJob(
        film=str(film.path),
        dub=DubTracks(dialogue=str(work / "dia.wav")),
        options=JobOptions(preset=preset, face_max_size=320),
    )
    write_manifest(work / "job.yaml", job)
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "DUB_MODEL_STORE": str(store)}
    peak_kb, wall, rc = peak_rss_of([str(ROOT / ".venv" / "bin" / "dub"), "run", str(work / "job.yaml"), "--out", str(work / f"run{minutes}")], env)
    return {
        "minutes": minutes,
        "frames": total,
        "generate_s": gen,
        "detect_fps": total / det,
        "assemble_fps": total / asm,
        "dub_run_s": wall,
        "dub_run_rc": rc,
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--preset", default="veryfast", help="x264 preset for reassembly (default veryfast)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dub-bench-") as tmp:
        store = Path(tmp) / "models"
        from lipsync import store as model_store

        shared = ROOT.parent / "shared" / "data" / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"
        model_store.pull("retinaface_mobilenet0.25", store, source=shared if shared.exists() else None)
        for m in args.minutes:
            work = Path(tmp) / f"m{m}"
            work.mkdir()
            row = run(m, args.preset, work, store)
            rows.append(row)
            print(
                f"{m:>3} min 1080p24 ({row['frames']} frames): shot detection {row['detect_fps']:.0f} fps, "
                f"reassembly {row['assemble_fps']:.1f} fps (x264 {args.preset}, crf 8), "
                f"dub run {row['dub_run_s']:.0f} s (rc {row['dub_run_rc']}), peak RSS {row['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    if len(rows) >= 2:
        print(f"peak RSS ratio {rows[-1]['minutes']} min / {rows[0]['minutes']} min: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
