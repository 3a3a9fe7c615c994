"""What a job leaves on disk: the size of OUT and of the cache against the source, for a 1080p job.

Generates a 1080p25 master (H.264, a hard cut every 10 s, grain, a tone), runs `dub run` on it with
the job defaults into a fresh OUT and a fresh cache folder, then prints the source's size, OUT's
(total and per file), the cache's, and their ratios to the source.  Without Wav2Lip weights every shot
passes through (the delivered film, reports, shots, faces; no segments); with ``--checkpoint random``
a random-weights Wav2Lip in the published format re-renders the faces it finds (slow on CPU).

    .venv/bin/python bench/bench_out_size.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_delivery import make_master  # noqa: E402


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def mb(n: int) -> str:
    return f"{n / 1e6:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-out-") as tmp:
        work = Path(tmp)
        master = work / "master.mp4"
        make_master(master, args.seconds, "h264")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(master), "-vn", "-ar", "48000",
                        "-c:a", "pcm_s16le", str(work / "dub.wav")], check=True)
        (work / "job.yaml").write_text(json.dumps({"schema": "dub-film/manifest@1", "film": "master.mp4",
                                                   "dub": {"language": "es", "dialogue": "dub.wav"},
                                                   "options": {"cache_dir": str(work / "cache")}}))
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dub", "run", str(work / "job.yaml"), "--out", str(work / "OUT")],
                       check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        src, out, cache = master.stat().st_size, size_of(work / "OUT"), size_of(work / "cache")
        print(f"1080p25, {args.seconds} s, H.264 master; dub run in {wall:.0f} s")
        print(f"source  {mb(src)}")
        print(f"OUT     {mb(out)}  ({out / src:.2f}x the source)")
        for p in sorted((work / "OUT").rglob("*")):
            if p.is_file():
                print(f"  {p.relative_to(work / 'OUT')!s:40s} {mb(p.stat().st_size)}")
        print(f"cache   {mb(cache)}  ({cache / src:.2f}x the source)")


if __name__ == "__main__":
    main()
