"""Active-speaker-detection throughput: face crops + Light-ASD, in face-track frames per second.

Scores the two face tracks of ``../shared/data/asd-two-face-composite`` (6 s,
720x288, 25 fps: 2 tracks x 150 frames) with the real Light-ASD weights and
prints, after one warm-up run:

* crops: decode the shot once + cut the 112 px gray crops of both tracks;
* model, ``frontend=track`` (default): encoders once per track, GRU per window,
  averaged over the 1..6 s windows;
* model, ``frontend=window``: the reference's per-window encoders (6 passes);
* total = crops + model (default frontend).

The boxes are fixed (the two faces of the clip do not move), so face detection
is not measured; pass ``--faces faces.json`` to use tracked boxes instead.

    .venv/bin/python bench/bench_asd.py [--device cpu|cuda] [--threads N] [--repeat 3] [--faces FACES] [--no-window]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubcore.records import FaceObservation, FaceTrack  # noqa: E402
from dubcore.timebase import FrameRange  # noqa: E402
from lipsync.media.audio import load_audio  # noqa: E402
from lipsync.media.probe import probe  # noqa: E402
from lipsync.models.light_asd import load_light_asd  # noqa: E402
from lipsync.speakers.asd import AsdParams, crop_tracks, score_crops  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "asd-two-face-composite" / "grid_two_face_turns.mp4"
WEIGHTS = SHARED / "weights" / "light-asd" / "pretrain_AVA_CVPR.model"
#: Where RetinaFace finds the two faces of the clip (x1, y1, x2, y2), steady over the clip.
BOXES = ((100.0, 99.0, 206.0, 250.0), (473.0, 102.0, 578.0, 248.0))


def fixed_tracks(n: int) -> list[FaceTrack]:
    return [
        FaceTrack(f"shot-0001/face-{i + 1:02d}", "shot-0001", FrameRange(0, n),
                  tuple(FaceObservation(f, box, None, 1.0) for f in range(n)))
        for i, box in enumerate(BOXES)
    ]


def best_of(repeat: int, fn):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per stage; the best is reported")
    ap.add_argument("--faces", default=None, help="faces.json of the clip (default: fixed boxes)")
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--no-window", action="store_true", help="skip the (6x slower) per-window reference mode")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = probe(CLIP)
    n = info.require_video().frame_count
    if args.faces:
        from lipsync.faces.facesfile import read_faces

        tracks = list(read_faces(args.faces).tracks)
    else:
        tracks = fixed_tracks(n)
    frames = sum(t.frames.duration for t in tracks)
    model = load_light_asd(args.weights, args.device)
    audio = load_audio(CLIP, 16000)
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"clip={CLIP.name} {len(tracks)} tracks, {frames} track-frames")

    crops = crop_tracks(CLIP, tracks, info=info)  # warm-up

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    t_crop = best_of(args.repeat, lambda: crop_tracks(CLIP, tracks, info=info))
    print(f"crops (decode + crop):        {frames / t_crop:8.1f} frames/s  ({t_crop:.2f} s)")
    results = {}
    for mode in ("track",) + (() if args.no_window else ("window",)):
        params = AsdParams(frontend=mode)  # type: ignore[arg-type]

        def run(params: AsdParams = params) -> None:
            for t in tracks:
                score_crops(crops[t.id], audio, 0, model, params)
            sync()

        run()  # warm-up
        results[mode] = best_of(args.repeat, run)
        print(f"model, frontend={mode:<6}:       {frames / results[mode]:8.1f} frames/s  ({results[mode]:.2f} s)")
    total = t_crop + results["track"]
    print(f"total (crops + model, track): {frames / total:8.1f} frames/s  ({total:.2f} s)")


if __name__ == "__main__":
    main()
