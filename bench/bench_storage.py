"""S3 storage throughput against a local moto server (127.0.0.1).

For each size, prints MB/s of:
  - upload: ``put_file`` (hash + multipart upload with SHA-256 checksums),
  - download: ``local_path`` (multipart download + size and checksum verification),
  - publish: ``stage`` + ``commit`` (upload to the staging prefix, server-side copy,
    ``_SUCCESS``, cleanup).

moto keeps objects in memory and is single-process Python, so these figures measure
the client-side overhead (hashing, verification, request count), not real S3.

    .venv/bin/python bench/bench_storage.py [--sizes 16 128] [--threshold 8]   # MiB
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dubcore.s3 import S3Storage  # noqa: E402
from s3server import moto_s3  # noqa: E402

MiB = 1024 * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 128], help="file sizes in MiB")
    ap.add_argument("--threshold", type=int, default=8, help="multipart threshold and part size in MiB (>= 5)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dub-bench-s3-"))
    try:
        with moto_s3() as server:
            st = S3Storage(server.client(), multipart_threshold=args.threshold * MiB,
                           multipart_chunksize=args.threshold * MiB)
            bucket = server.bucket("bench")
            print(f"moto at {server.endpoint_url}; multipart threshold/part size {args.threshold} MiB")
            print(f"{'size MiB':>9} {'upload MB/s':>12} {'download MB/s':>14} {'publish MB/s':>13}")
            for size in args.sizes:
                src = work / f"src-{size}.bin"
                with open(src, "wb") as fh:
                    for _ in range(size):
                        fh.write(os.urandom(MiB))
                mb = size * MiB / 1e6
                t0 = time.perf_counter()
                st.put_file(src, f"s3://{bucket}/up/{size}.bin")
                up = mb / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                st.local_path(f"s3://{bucket}/up/{size}.bin", work / f"dl-{size}")
                down = mb / (time.perf_counter() - t0)
                staging = st.stage(f"s3://{bucket}/pub/{size}")
                shutil.copyfile(src, staging.root / "film.bin")
                t1 = time.perf_counter()
                staging.commit()
                pub = mb / (time.perf_counter() - t1)
                print(f"{size:>9} {up:>12.1f} {down:>14.1f} {pub:>13.1f}")
                src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
