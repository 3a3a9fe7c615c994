"""Lip-sync benchmark: streamed engine against the reference's hold-everything approach, and memory.

For a generated talking-face shot (a real face photo moving over a background,
360x288 at 25 fps) it prints:
  - end-to-end frames/second of ``LipSyncEngine.render_shot`` (decode -> crop ->
    generate -> blend -> lossless encode, streamed, batched);
  - the same work done the way Wav2Lip's ``inference.py`` does it: every frame read
    into a list first, every crop and result kept, written at the end;
  - peak RSS of both, for each shot length given (``--seconds``).

``--generator wav2lip`` (default) runs the real generator with random weights in the
published format; ``--generator cheap`` swaps in a tiny network with the same input
contract, to measure the pipeline's own throughput and memory on long shots in
minutes rather than hours on a CPU.  ``--device cuda`` on a GPU machine.

    .venv/bin/python bench/bench_lipsync.py --seconds 10 --generator wav2lip
    .venv/bin/python bench/bench_lipsync.py --seconds 60 600 --generator cheap
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _model(kind: str, device: str):  # type: ignore[no-untyped-def]
    import torch

    from lipsync.models.wav2lip import Wav2Lip

    torch.manual_seed(0)
    if kind == "wav2lip":
        return Wav2Lip()

    class Cheap(torch.nn.Module):
        contract = Wav2Lip.contract

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 3, 3, padding=1)

        def forward(self, audio, face):  # type: ignore[no-untyped-def]
            return torch.sigmoid(self.conv(face) + audio.mean())

    return Cheap()


def _shot(work: Path, seconds: int) -> tuple[Path, object]:
    import cv2

    from dubcore.records import FaceObservation, FaceTrack
    from dubcore.timebase import FrameRange
    from lipsync.media.synth import make_moving_face

    shared = ROOT.parent / "shared" / "data"
    img = cv2.imread(str(shared / "face-photos" / "astronaut.png"))
    frames = seconds * 25
    shot = make_moving_face(work / f"shot{seconds}.mp4", img, (179.0, 55.0, 270.0, 178.0), frames=frames, size=(360, 288), scale=(0.5, 0.55))
    # The shot's true face boxes stand in for tracking (the benchmark is about lip-sync).
    obs = tuple(FaceObservation(i, box, None, 1.0) for i, box in enumerate(shot.truth))
    return shot.path, FaceTrack("bench/face-01", "bench", FrameRange(0, frames), obs)


def _streamed(path: str, track, kind: str, device: str, out: str, q) -> None:  # type: ignore[no-untyped-def]
    from dubcore.timebase import FrameRange
    from lipsync.inference import LipSyncEngine, LipSyncParams, TrackDrive
    from lipsync.media.probe import probe

    v = probe(path).require_video()
    engine = LipSyncEngine(_model(kind, device), device, LipSyncParams())
    audio = np.random.default_rng(0).standard_normal(v.frame_count * 640 + 16000).astype(np.float32) * 0.1
    t0 = time.perf_counter()
    engine.render_shot(path, FrameRange(0, v.frame_count), [TrackDrive(track, audio)], out)
    q.put((v.frame_count / (time.perf_counter() - t0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _hold_all(path: str, track, kind: str, device: str, out: str, q) -> None:  # type: ignore[no-untyped-def]
    """The reference's approach: all frames in a list, all crops and outputs kept, one write at the end."""
    import cv2
    import torch

    from lipsync.audio.mel import mel_windows, melspectrogram
    from lipsync.inference import CropParams, crop_box
    from lipsync.media.frames import FrameReader, FrameWriter, LOSSLESS
    from lipsync.media.probe import probe

    v = probe(path).require_video()
    model = _model(kind, device).to(device).eval()
    c = model.contract
    t0 = time.perf_counter()
    frames = [np.array(f) for f in FrameReader(path)]
    audio = np.random.default_rng(0).standard_normal(len(frames) * 640 + 16000).astype(np.float32) * 0.1
    mels = mel_windows(melspectrogram(audio), len(frames), v.fps, c)
    boxes = [crop_box(track.at(i).box, CropParams(), (v.width, v.height)) for i in range(len(frames))]
    faces = [cv2.resize(f[y1:y2, x1:x2], (c.face_size, c.face_size)) for f, (x1, y1, x2, y2) in zip(frames, boxes)]
    outputs = []
    for s in range(0, len(faces), 16):
        batch = np.stack(faces[s : s + 16]).astype(np.float32) / 255.0
        masked = batch.copy()
        masked[:, c.mask_row :] = 0
        x = torch.from_numpy(np.concatenate([masked, batch], 3).transpose(0, 3, 1, 2)).to(device)
        with torch.inference_mode():
            y = model(torch.from_numpy(mels[s : s + 16]).to(device), x)
        outputs.extend((y.cpu().numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    for f, o, (x1, y1, x2, y2) in zip(frames, outputs, boxes):
        f[y1:y2, x1:x2] = cv2.resize(o, (x2 - x1, y2 - y1))  # hard paste, as the reference does
    with FrameWriter(out, width=v.width, height=v.height, fps=v.fps, pix_fmt="bgr24", settings=LOSSLESS) as w:
        for f in frames:
            w.write(f)
    q.put((len(frames) / (time.perf_counter() - t0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _measure(fn, *args):  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, nargs="+", default=[10])
    ap.add_argument("--generator", choices=["wav2lip", "cheap"], default="wav2lip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-reference", action="store_true", help="only the streamed engine")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dub-bench-lipsync-") as tmp:
        work = Path(tmp)
        rss = []
        for seconds in args.seconds:
            path, track = _shot(work, seconds)
            fps, peak = _measure(_streamed, str(path), track, args.generator, args.device, str(work / "s.mkv"))
            rss.append(peak)
            line = f"{seconds:>4} s shot ({seconds * 25} frames, {args.generator}, {args.device}): streamed {fps:.1f} fps, peak RSS {peak:.0f} MB"
            if not args.skip_reference:
                rfps, rpeak = _measure(_hold_all, str(path), track, args.generator, args.device, str(work / "r.mkv"))
                line += f"; hold-all reference {rfps:.1f} fps, peak RSS {rpeak:.0f} MB"
            print(line, flush=True)
        if len(rss) > 1:
            print(f"streamed peak RSS ratio {args.seconds[-1]} s / {args.seconds[0]} s: {rss[-1] / rss[0]:.2f}x")


if __name__ == "__main__":
    main()
