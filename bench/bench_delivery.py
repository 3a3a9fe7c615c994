"""Delivery benchmark: size of the delivered film against its master, and quality of unchanged shots.

Generates a 1080p master (25 fps, a hard cut every 10 s, light film grain, a tone as
audio) in the codec asked (H.264 CRF 20 or HEVC CRF 24, preset veryfast: a typical
mezzanine/phone export), re-renders one shot (a lossless segment, as the lip-sync
stage writes) and assembles the delivered film with the job defaults
(``options.video_codec: auto``, CRF of ``DELIVERY_CRF``, language ``es``).  Prints,
per master codec:
  - master and delivered size and video bitrate, and their ratio,
  - the delivered codec, SAR and audio language tag,
  - the worst PSNR (Y'CbCr planes) over every 5th frame of the unchanged shots,
  - assembly time.

    .venv/bin/python bench/bench_delivery.py [--seconds 60] [--codecs h264 hevc] [--crf N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubcore.manifest import DubJob, DubTracks, JobOptions  # noqa: E402
from dubcore.records import Shot, ShotList  # noqa: E402
from dubcore.timebase import FrameRange, samples_for_frames  # noqa: E402
from lipsync.media import FrameReader, probe  # noqa: E402
from lipsync.media.assemble import assemble, write_segment  # noqa: E402
from lipsync.media.frames import DELIVERY_CRF  # noqa: E402
from lipsync.media.synth import write_tone  # noqa: E402
from lipsync.pipeline import encode_settings  # noqa: E402

ENCODERS = {
    "h264": ["-c:v", "libx264", "-crf", "20", "-preset", "veryfast"],
    "hevc": ["-c:v", "libx265", "-crf", "24", "-preset", "veryfast", "-tag:v", "hvc1", "-x265-params", "log-level=error"],
}
FPS = 25
SHOT_SECONDS = 10


def make_master(path: Path, seconds: int, codec: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc2=s=1920x1080:r={FPS}:d={seconds}", "-f", "lavfi", "-i", f"sine=f=220:d={seconds}",
           # a hard cut every SHOT_SECONDS (hue jump), light temporal grain as on real footage
           "-vf", f"hue=h='180*mod(floor(t/{SHOT_SECONDS}),2)',noise=alls=3:allf=t:all_seed=1,setsar=1/1",
           *ENCODERS[codec], "-pix_fmt", "yuv420p", "-color_primaries", "bt709", "-color_trc", "bt709",
           "-colorspace", "bt709", "-c:a", "aac", "-b:a", "192k", "-shortest", str(path)]
    subprocess.run(cmd, check=True)


def video_bitrate(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    total = sum(int(x) for x in out.split() if x.strip().isdigit())
    return total * 8 / (probe(path).require_video().frame_count / FPS)


def stream_tags(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    streams = json.loads(out)["streams"]
    v = next(s for s in streams if s["codec_type"] == "video")
    a = next(s for s in streams if s["codec_type"] == "audio")
    return {"codec": v["codec_name"], "sar": v.get("sample_aspect_ratio"), "language": a.get("tags", {}).get("language")}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _quality(settings) -> str:  # type: ignore[no-untyped-def]
    if settings.codec in DELIVERY_CRF:
        return f"CRF {settings.crf if settings.crf is not None else DELIVERY_CRF[settings.codec]}"
    return f"profile {settings.profile}" if settings.profile else "lossless"


def run(work: Path, seconds: int, codec: str, crf: int | None) -> None:
    master = work / f"master {codec}.mp4"
    t0 = time.perf_counter()
    make_master(master, seconds, codec)
    gen = time.perf_counter() - t0
    info = probe(master)
    v = info.require_video()
    n = v.frame_count
    bounds = list(range(0, n, SHOT_SECONDS * FPS)) + [n]
    shots = ShotList(str(master), v.fps, n, tuple(
        Shot(f"shot-{i + 1:04d}", i, FrameRange(a, b), v.fps) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))))
    redo = shots.shots[len(shots.shots) // 2]
    seg = write_segment(work / "seg.mkv", (255 - f for f in FrameReader(master, frames=redo.frames, pix_fmt=v.pix_fmt, info=info)),
                        like=v, count=redo.frames.duration)
    write_tone(work / "mix.wav", samples_for_frames(n, v.fps, 48000), 48000)
    job = DubJob(film=str(master), dub=DubTracks(dialogue=str(work / "mix.wav"), language="es"),
                 options=JobOptions(crf=crf))
    out = work / "film.dubbed.mp4"
    t0 = time.perf_counter()
    result = assemble(master, shots, out, audio=work / "mix.wav", segments={redo.id: seg},
                      settings=encode_settings(job, info), info=info)
    took = time.perf_counter() - t0
    worst = float("inf")
    for shot in shots:
        if shot.id == redo.id:
            continue
        src = FrameReader(master, frames=shot.frames, pix_fmt=v.pix_fmt, info=info)
        dst = FrameReader(out, frames=shot.frames, pix_fmt=v.pix_fmt)
        for i, (a, b) in enumerate(zip(src, dst)):
            if i % 5 == 0:
                worst = min(worst, psnr(a, b))
    ms, os_ = master.stat().st_size, out.stat().st_size
    mb, ob = video_bitrate(master), video_bitrate(out)
    tags = stream_tags(out)
    print(f"[{codec} master] {seconds} s 1080p{FPS}, generated in {gen:.0f} s")
    print(f"  master     {ms / 1e6:8.2f} MB  video {mb / 1e6:6.2f} Mb/s  ({v.codec})")
    print(f"  delivered  {os_ / 1e6:8.2f} MB  video {ob / 1e6:6.2f} Mb/s  ({tags['codec']} {result.settings.codec} "
          f"{_quality(result.settings)}; SAR {tags['sar']}; "
          f"audio language {tags['language']})")
    print(f"  size ratio {os_ / ms:.2f}x, video bitrate ratio {ob / mb:.2f}x; worst unchanged frame "
          f"(every 5th) {worst:.2f} dB; assembly {took:.0f} s ({n / took:.1f} fps)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--codecs", nargs="+", default=["h264", "hevc"], choices=sorted(ENCODERS))
    ap.add_argument("--crf", type=int, default=None, help="override the delivery CRF (default: DELIVERY_CRF)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        for codec in args.codecs:
            work = Path(tmp) / codec
            work.mkdir()
            run(work, args.seconds, codec, args.crf)


if __name__ == "__main__":
    main()
