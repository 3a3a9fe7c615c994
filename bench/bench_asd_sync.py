"""Weight-free lip-sync offset (lipsync.qc.asd_sync) on the GRID clips with constructed audio delays.

For each of the 8 clips of ``../shared/data/grid-talking-faces`` (3 s, 25 fps,
one face): RetinaFace track (the longest), crops, one visual encoding, then
:func:`~lipsync.qc.asd_sync.asd_offset` with the audio delayed by each of
``--delays`` frames (positive = the audio comes later: zeros prepended, tail
dropped; negative = head dropped, zeros appended).  Prints per clip and delay
the truth, the estimate (the module's rule: Light-ASD curve + mouth-envelope
curve, z-scored and summed, argmax), each signal's own offset (Light-ASD,
middle of the top; mouth envelope, argmax), whether they agree, the
confidence (R^2 of the mouth fit), then the hit rate (within 1 frame) of each,
the mean |error| and the time per track-second.  ``--heads`` adds the two
8 s talking heads of ``../shared/data/talking-heads`` (first 200 frames), whose
true offset is unknown: there the spread of ``estimate - delay`` over the
delays says how steadily the estimate follows a delay.  Times:

* crops: decode + 112 px crops (face detection is not counted);
* visual: the visual encoder, once per track;
* offset: one ``estimate_offset`` call with the visual embedding given (audio
  encoder once + ``2 * max_offset + 1`` back-end passes + the mouth-envelope fit);
* per measurement = visual + offset (a track measured against one audio).

    .venv/bin/python bench/bench_asd_sync.py [--device cpu|cuda] [--threads 1] [--delays 0,3,-3,6,-6]
                                             [--max-offset 15] [--window 5] [--heads]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubcore.records import ShotList  # noqa: E402
from lipsync.faces.detect import build_detector  # noqa: E402
from lipsync.faces.pipeline import track_shot_faces  # noqa: E402
from lipsync.media.audio import load_audio  # noqa: E402
from lipsync.media.probe import probe  # noqa: E402
from lipsync.models.light_asd import load_light_asd  # noqa: E402
from lipsync.qc.asd_sync import SYNC_WINDOW, estimate_offset  # noqa: E402
from lipsync.speakers.asd import crop_tracks, encode_faces  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CLIPS = SHARED / "grid-talking-faces"
WEIGHTS = SHARED / "weights" / "light-asd" / "pretrain_AVA_CVPR.model"
RETINAFACE = SHARED / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"


def delay_audio(audio: np.ndarray, k: int, samples_per_frame: int = 640) -> np.ndarray:
    n = abs(k) * samples_per_frame
    pad = np.zeros(n, dtype=np.float32)
    if k >= 0:
        return np.concatenate([pad, audio])[: len(audio)]
    return np.concatenate([audio[n:], pad])[: len(audio)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--delays", default="0,3,-3,6,-6", help="audio delays in frames, comma-separated")
    ap.add_argument("--heads", action="store_true", help="also the talking-heads clips (true offset unknown)")
    ap.add_argument("--max-offset", type=int, default=15)
    ap.add_argument("--window", type=int, default=SYNC_WINDOW)
    ap.add_argument("--weights", default=str(WEIGHTS))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    delays = [int(d) for d in args.delays.split(",") if d.strip()]
    model = load_light_asd(args.weights, args.device)
    detector = build_detector("retinaface", weights=str(RETINAFACE), device=args.device)
    clips = sorted(CLIPS.glob("*.mpg")) + (sorted((SHARED / "talking-heads").glob("*.mp4")) if args.heads else [])
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"{len(clips)} clips, delays {delays}, max_offset {args.max_offset}, window {args.window}")

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    print(f"{'clip':<34} {'truth':>5} {'est':>4} {'asd':>4} {'mouth':>5} {'agree':>5} {'conf':>5}")
    errors, asd_errors, mouth_errors, head_errors = [], [], [], {}
    seconds = t_crop = t_visual = t_offset = 0.0
    calls = 0
    for clip in clips:
        info = probe(clip)
        v = info.require_video()
        shot = ShotList.from_cuts(str(clip), v.fps, min(v.frame_count, 200), []).shots[0]
        tracks = track_shot_faces(clip, shot, detector, info=info).tracks
        if not tracks:
            print(f"{clip.name:<20} no face")
            continue
        track = max(tracks, key=lambda t: t.frames.duration)
        t0 = time.perf_counter()
        crops = crop_tracks(clip, [track], info=info)[track.id]
        t1 = time.perf_counter()
        visual = encode_faces(crops, model)
        sync()
        t2 = time.perf_counter()
        t_crop, t_visual = t_crop + (t1 - t0), t_visual + (t2 - t1)
        seconds += track.frames.duration / float(v.fps)
        audio = load_audio(clip, 16000)
        for k in delays:
            late = delay_audio(audio, k)
            t3 = time.perf_counter()
            r = estimate_offset(crops, late, 0, model, max_offset=args.max_offset, window=args.window, visual_embed=visual)
            sync()
            t_offset += time.perf_counter() - t3
            calls += 1
            if clip.suffix == ".mp4":
                head_errors.setdefault(clip.name, []).append(r.offset - k)
            else:
                errors.append(abs(r.offset - k))
                asd_errors.append(abs(r.asd.offset - k))
                mouth_errors.append(abs(r.mouth_offset - k))
            miss = "" if abs(r.offset - k) <= 1 else "  MISS"
            print(f"{clip.name:<34} {k:>+5d} {r.offset:>+4d} {r.asd.offset:>+4d} {r.mouth_offset:>+5d} {str(r.agree):>5} "
                  f"{r.confidence:>5.2f}{miss}", flush=True)
    for name, errs in (("combined (the rule)", errors), ("Light-ASD alone", asd_errors), ("mouth envelope alone", mouth_errors)):
        if errs:
            e = np.array(errs)
            print(f"GRID, {name:<21}: within 1 frame {int(np.sum(e <= 1))}/{len(e)} ({100 * np.mean(e <= 1):.0f}%), "
                  f"exact {int(np.sum(e == 0))}, mean |error| {e.mean():.2f} frames")
    for name, errs in head_errors.items():
        print(f"{name}: estimate - delay {errs} (spread {max(errs) - min(errs)})")
    offset_per_second = t_offset / (seconds * len(delays))  # every track is measured once per delay
    print(f"time per track-second: crops {t_crop / seconds * 1000:.0f} ms, visual {t_visual / seconds * 1000:.0f} ms, "
          f"offset {offset_per_second * 1000:.0f} ms; one measurement (visual + offset) "
          f"{(t_visual / seconds + offset_per_second) * 1000:.0f} ms ({seconds:.0f} track-seconds, {calls} offset calls)")

if __name__ == "__main__":
    main()
