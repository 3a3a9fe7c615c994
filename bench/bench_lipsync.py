"""Lip-sync benchmark: `dub lipsync` end to end against the generator alone, per stage, with memory and launches.

On the same clip (the shared talking head, looped and scaled to each size) and the
same weights (a random Wav2Lip checkpoint in the published format, or ``--checkpoint``),
with the same face box (a faces.json, as the reference's ``--box``), it prints:

  - generator-alone fps: the loaded generator on random inputs at batch 16 and at the
    engine's batch (16 on CPU, 128 on CUDA), nothing else running;
  - stage fps: decode alone (the engine's reader), paste alone (crop, resize, colour
    match, blend into the source's planes), encode alone (the delivery encoder, fed
    decoded frames);
  - end-to-end fps of ``dub lipsync CLIP SPEECH --faces faces.json -o out.mp4``, timed
    from the command's start to its end (imports, model load, decode, generator, paste,
    encode, join and mux), its ratio to the generator alone, its peak RSS, and the
    child processes it launched (per shot: the CLI's clip is one shot);

for each size (``--sizes``, default 360x288 and 1280x720) and length (``--seconds``,
default 10 and 60).  ``--threads`` fixes torch's CPU threads for both (default: all
cores).  ``--device cuda`` on a GPU machine; ``--encoder h264_nvenc`` and
``--hwaccel cuda`` use NVENC / NVDEC (see bench/device_gpu.sh).

    .venv/bin/python bench/bench_lipsync.py
    .venv/bin/python bench/bench_lipsync.py --sizes 1280x720 --seconds 10 --preset veryfast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "talking-heads" / "WDA_KatieHill_000.mp4"
SPEECH = SHARED / "talking-heads" / "deyu.wav"
BOX_512 = (176.0, 96.0, 336.0, 296.0)  # the face of the 512x512 talking head (RetinaFace, rounded)


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def make_clip(work: Path, width: int, height: int, seconds: int) -> Path:
    out = work / f"clip-{width}x{height}-{seconds}s.mp4"
    if not out.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(CLIP), "-t", str(seconds),
                        "-vf", f"scale={width}:{height},setsar=1", "-an", "-c:v", "libx264", "-crf", "18", "-preset", "fast",
                        "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def make_faces(work: Path, clip: Path, width: int, height: int) -> Path:
    from dubcore.records import FaceObservation, FaceTrack, ShotList
    from lipsync.faces.facesfile import write_faces
    from lipsync.media.probe import probe

    v = probe(clip).require_video()
    sx, sy = width / 512, height / 512
    box = (BOX_512[0] * sx, BOX_512[1] * sy, BOX_512[2] * sx, BOX_512[3] * sy)
    shots = ShotList.from_cuts(str(clip), v.fps, v.frame_count, [])
    shot = shots.shots[0]
    track = FaceTrack(f"{shot.id}/face-01", shot.id, shot.frames,
                      tuple(FaceObservation(i, box, None, 1.0) for i in range(v.frame_count)))
    path = work / f"{clip.stem}.faces.json"
    write_faces(path, source=str(clip), fps=v.fps, frame_count=v.frame_count, shots=shots.shots, tracks=[track])
    return path


def make_checkpoint(work: Path) -> Path:
    import torch

    from lipsync.models.wav2lip import Wav2Lip

    path = work / "wav2lip_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        model = Wav2Lip()
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "global_step": 0}, path)
    return path


# --------------------------------------------------------------------------- measured in child processes


def generator_alone(checkpoint: str, device: str, batch: int, threads: int, seconds: float) -> float:
    import numpy as np
    import torch

    from lipsync.render.generator import load_generator

    if threads:
        torch.set_num_threads(threads)
    g = load_generator(checkpoint, device)
    s = g.contract.face_size
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    mels = rng.standard_normal((batch, 1, 80, g.contract.mel_step)).astype(np.float32)
    x, m = g.preprocess(faces, mels)
    g.postprocess(g.forward(x, m))  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        g.postprocess(g.forward(*g.preprocess(faces, mels)))
        n += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def stages(clip: str, faces: str, preset: str | None, encoder: str | None) -> dict[str, float]:
    """Decode, paste and encode each alone (fps), as the engine does them."""
    import numpy as np

    from lipsync.faces.facesfile import read_faces
    from lipsync.media.assemble import part_writer, resolve_settings
    from lipsync.media.frames import EncodeSettings, FrameReader
    from lipsync.media.probe import probe
    from lipsync.render.blend import crop_box, frame_domain, paste_face
    from lipsync.render.params import LipSyncParams

    info = probe(clip)
    v = info.require_video()
    domain = frame_domain(v.pix_fmt, v.width, v.height)
    t0 = time.perf_counter()
    kept = []
    for i, f in enumerate(FrameReader(clip, pix_fmt=domain.read_fmt, info=info)):
        if i < 64:
            kept.append(f)
    decode = v.frame_count / (time.perf_counter() - t0)
    track = read_faces(faces).tracks[0]
    params = LipSyncParams()
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for i in range(v.frame_count):
        frame = kept[i % len(kept)].copy()
        box = crop_box(track.at(i).box, params.crop, (v.width, v.height), even=domain.even)
        crop = domain.crop_bgr(frame, box)
        paste_face(domain, frame, box, crop, face, params.blend)
    paste = v.frame_count / (time.perf_counter() - t0)
    base = EncodeSettings(codec=encoder, crf=None, preset=None) if encoder else None
    settings = resolve_settings(base, v, ".mp4") if base is None else base
    if preset and settings.codec in ("libx264", "libx265"):
        from dataclasses import replace

        settings = replace(settings, preset=preset)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with part_writer(Path(tmp) / "enc.mkv", v, settings, v.frame_count, pix_fmt=domain.read_fmt) as w:
            for i in range(v.frame_count):
                w.write(kept[i % len(kept)])
        encode = v.frame_count / (time.perf_counter() - t0)
    return {"decode": decode, "paste": paste, "encode": encode}


def _child(kind: str, payload: dict) -> dict:
    """Run ``kind`` in a fresh interpreter; returns its JSON answer."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['bench']; "
            f"from bench.bench_lipsync import _serve; print('RESULT' + json.dumps(_serve({kind!r}, json.loads(sys.stdin.read()))))")
    proc = subprocess.run([_python(), "-c", code], input=json.dumps(payload), capture_output=True, text=True, env=_env(payload))
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def _env(payload: dict) -> dict:
    env = dict(os.environ)
    if payload.get("threads"):
        env["OMP_NUM_THREADS"] = str(payload["threads"])
    if payload.get("hwaccel"):
        env["DUB_HWACCEL"] = payload["hwaccel"]
    return env


def _serve(kind: str, p: dict) -> dict:
    if kind == "generator":
        return {"fps": generator_alone(p["checkpoint"], p["device"], p["batch"], p["threads"], p["seconds"])}
    if kind == "stages":
        return stages(p["clip"], p["faces"], p.get("preset"), p.get("encoder"))
    if kind == "e2e":
        return end_to_end(p)
    raise ValueError(kind)


def end_to_end(p: dict) -> dict:
    """`dub lipsync` in this (fresh) interpreter, as the CLI runs it, with its launches recorded."""
    import torch

    if p.get("threads"):
        torch.set_num_threads(p["threads"])
    from lipsync.media.launches import record_launches

    args = ["lipsync", p["clip"], str(SPEECH), "--faces", p["faces"], "--checkpoint", p["checkpoint"],
            "--device", p["device"], "-o", p["out"]] + (["--preset", p["preset"]] if p.get("preset") else []) \
        + (["--video-codec", p["encoder"]] if p.get("encoder") else [])
    from dub.cli import app

    with record_launches() as launched:
        try:
            app(args, standalone_mode=False)
        except SystemExit as exc:  # pragma: no cover
            if exc.code:
                raise
    return {"launches": launched.summary(), "count": launched.count(),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["360x288", "1280x720"])
    ap.add_argument("--seconds", type=int, nargs="+", default=[10, 60])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, all cores)")
    ap.add_argument("--checkpoint", default=None, help="Wav2Lip weights (default: random weights, published format)")
    ap.add_argument("--preset", default=None, help="x264/x265 preset of the delivery (default: the pipeline's, medium)")
    ap.add_argument("--encoder", default=None, help="delivery encoder for the stage figures (e.g. h264_nvenc)")
    ap.add_argument("--hwaccel", default=None, help="ffmpeg -hwaccel for decoding (e.g. cuda)")
    ap.add_argument("--gen-seconds", type=float, default=20.0, help="how long to time the generator alone")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dub-bench-lipsync-"))
    checkpoint = args.checkpoint or str(make_checkpoint(work))
    engine_batch = 128 if args.device.startswith("cuda") else 16
    gen = {}
    for batch in sorted({16, engine_batch}):
        gen[batch] = _child("generator", {"checkpoint": checkpoint, "device": args.device, "batch": batch,
                                          "threads": args.threads, "seconds": args.gen_seconds})["fps"]
        print(f"generator alone, batch {batch}: {gen[batch]:.1f} fps ({args.device}, threads {args.threads or 'default'})", flush=True)
    print(f"{'clip':>18} {'frames':>6} {'decode':>7} {'paste':>7} {'encode':>7} {'e2e fps':>8} {'e2e/gen':>7} {'RSS MB':>7}  launches")
    for size in args.sizes:
        w, h = (int(x) for x in size.split("x"))
        for seconds in args.seconds:
            clip = make_clip(work, w, h, seconds)
            faces = make_faces(work, clip, w, h)
            from lipsync.media.probe import probe

            frames = probe(clip).require_video().frame_count
            st = _child("stages", {"clip": str(clip), "faces": str(faces), "preset": args.preset, "encoder": args.encoder,
                                   "hwaccel": args.hwaccel})
            payload = {"clip": str(clip), "faces": str(faces), "checkpoint": checkpoint, "device": args.device,
                       "threads": args.threads, "out": str(work / f"out-{w}x{h}-{seconds}.mp4"), "hwaccel": args.hwaccel,
                       "encoder": args.encoder}
            if args.preset:
                payload["preset"] = args.preset
            t0 = time.perf_counter()
            e2e = _child("e2e", payload)
            wall = time.perf_counter() - t0
            fps = frames / wall
            ratio = fps / gen[engine_batch]
            print(f"{w}x{h} {seconds:>3} s {frames:>6} {st['decode']:>7.0f} {st['paste']:>7.0f} {st['encode']:>7.0f} "
                  f"{fps:>8.2f} {ratio:>7.2f} {e2e['rss_mb']:>7.0f}  {e2e['count']} ({e2e['launches']})", flush=True)
    print(f"(work files in {work})")


if __name__ == "__main__":
    main()
