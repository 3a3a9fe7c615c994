"""Seam of the pasted face on a real clip, and the cost of the blend mask: the old mask against the current one.

Renders the first frames of a shared talking-head clip with random Wav2Lip weights, once with the
Gaussian-blurred mask dub-film used before (rebuilt for every frame, border forced to zero) and once
with the current one (:func:`lipsync.render.blend.blend_mask`: smoothstep ramps that reach zero inside
the crop, cached per crop size), and reports for each:

* the largest step of (output - source) luma between neighbouring pixels across the mask's border
  (one side weighted 0) -- the visible seam;
* milliseconds per mask request (build for the old one; cache lookup or build for the new one).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_blend_seam.py [--frames 25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

from lipsync.qc.seam import border_step  # noqa: E402


def old_blend_mask(height: int, width: int, params) -> np.ndarray:  # type: ignore[no-untyped-def]
    """dub-film's mask before issue 15: a blurred rectangle down to 0.97 of the crop, edges forced to 0."""
    import cv2

    mask = np.zeros((height, width), np.float32)
    top, bottom = int(round(0.45 * height)), int(round(0.97 * height))
    side = int(round(0.12 * width))
    mask[top:bottom, side : width - side] = 1.0
    sigma = max(0.5, 0.08 * max(height, width))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    mask[0, :] = mask[-1, :] = 0.0
    mask[:, 0] = mask[:, -1] = 0.0
    return mask[:, :, None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--clip", default=str(SHARED / "talking-heads" / "WDA_KatieHill_000.mp4"))
    ap.add_argument("--audio", default=str(SHARED / "talking-heads" / "fayu.wav"))
    args = ap.parse_args()

    import torch

    from dubcore.records import ShotList
    from dubcore.timebase import FrameRange
    from lipsync.render import blend as inference
    from lipsync.render.engine import LipSyncEngine
    from lipsync.render.params import LipSyncParams, TrackDrive
    from lipsync.faces.detect import build_detector
    from lipsync.faces.pipeline import track_film_faces
    from lipsync.media import FrameReader, probe
    from lipsync.media.audio import load_audio
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync import store

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Wav2Lip().eval()
    info = probe(args.clip)
    v = info.require_video()
    n = min(args.frames, v.frame_count)
    with tempfile.TemporaryDirectory() as tmp:
        weights = SHARED / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"
        store.pull("retinaface_mobilenet0.25", tmp, source=weights)
        det = build_detector("retinaface", weights="retinaface_mobilenet0.25", store=tmp)
        (tracking,) = track_film_faces(args.clip, ShotList.from_cuts(args.clip, v.fps, n, []), det, info=info)
        track = max(tracking.tracks, key=lambda t: t.frames.duration)
        audio = load_audio(args.audio, 16000)
        new_mask, new_chroma = inference.blend_mask, inference._chroma_mask
        for name, mask_fn in (("old (blurred, per frame)", old_blend_mask), ("new (smoothstep, cached)", new_mask)):
            calls = [0, 0.0]

            def timed(h, w, p, _f=mask_fn):  # type: ignore[no-untyped-def]
                t0 = time.perf_counter()
                m = _f(h, w, p)
                calls[0] += 1
                calls[1] += time.perf_counter() - t0
                return m

            inference.blend_mask = timed
            inference._chroma_mask = (
                (lambda h, w, p: old_blend_mask(h, w, p)[:, :, 0].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
                if mask_fn is old_blend_mask else new_chroma
            )
            if mask_fn is new_mask:
                new_mask.cache_clear()
            engine = LipSyncEngine(model, "cpu", LipSyncParams(batch_size=16))
            seg = Path(tmp) / f"seg{calls[0]}{len(name)}.mkv"
            t0 = time.perf_counter()
            engine.render_shot(args.clip, FrameRange(0, n), [TrackDrive(track, audio)], seg, info=info)
            render_s = time.perf_counter() - t0
            inference.blend_mask, inference._chroma_mask = new_mask, new_chroma
            w, h = v.width, v.height
            worst = 0
            for i, (a, b) in enumerate(zip(FrameReader(args.clip, frames=FrameRange(0, n), pix_fmt="yuv420p"),
                                           FrameReader(seg, pix_fmt="yuv420p"))):
                obs = track.at(i)
                if obs is None:
                    continue
                box = inference.crop_box(obs.box, engine.params.crop, (w, h), even=True)
                x1, y1, x2, y2 = box
                m = mask_fn(y2 - y1, x2 - x1, engine.params.blend)[:, :, 0]
                worst = max(worst, border_step(a[: w * h].reshape(h, w), b[: w * h].reshape(h, w), box, m))
            print(f"{name:26s} largest step across the mask border {worst:3d} grey levels; "
                  f"mask {1000 * calls[1] / max(1, calls[0]):.3f} ms/request over {calls[0]} requests; "
                  f"render {n / render_s:.1f} frames/s ({n} frames, {Fraction(v.fps)} fps)")


if __name__ == "__main__":
    main()
