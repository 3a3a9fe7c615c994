"""Synthetic films with known ground truth, for the demo, the tests and the benchmarks.

Each shot is drawn from one of ffmpeg's test sources with its own hue, so that
every cut is a hard, unambiguous change; frame counts and cut positions are
exact.  Audio is generated with numpy (known waveforms) and written as WAV.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from dubcore.schema import atomic_path
from dubcore.timebase import format_rate, samples_for_frames

from .errors import MediaError
from .probe import require_tool

_SOURCES = (
    "testsrc2=s={w}x{h}:r={r}",
    "smptehdbars=s={w}x{h}:r={r}",
    "mandelbrot=s={w}x{h}:r={r}",
    "rgbtestsrc=s={w}x{h}:r={r}",
)


@dataclass(frozen=True)
class SynthFilm:
    path: Path
    fps: Fraction
    frame_count: int
    cuts: tuple[int, ...]
    width: int
    height: int
    sample_rate: int


def make_film(
    path: str | Path,
    shot_lengths: Sequence[int],
    *,
    fps: Fraction = Fraction(25),
    size: tuple[int, int] = (320, 240),
    sample_rate: int = 48000,
    audio: bool = True,
    crf: int = 18,
    preset: str = "veryfast",
) -> SynthFilm:
    """Encode a film of ``len(shot_lengths)`` hard-cut shots, with a tone as original audio."""
    if not shot_lengths or any(n <= 0 for n in shot_lengths):
        raise ValueError("shot lengths must be positive")
    w, h = size
    rate = format_rate(fps)
    parts = []
    labels = []
    for i, n in enumerate(shot_lengths):
        src = _SOURCES[i % len(_SOURCES)].format(w=w, h=h, r=rate)
        hue = (i * 97) % 360
        parts.append(f"{src},trim=end_frame={n},setpts=PTS-STARTPTS,hue=h={hue},format=yuv420p[v{i}]")
        labels.append(f"[v{i}]")
    graph = ";".join(parts) + ";" + "".join(labels) + f"concat=n={len(shot_lengths)}:v=1:a=0[vout]"
    total = int(sum(shot_lengths))
    out = Path(path)
    with atomic_path(out) as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-filter_complex", graph]
        wav = None
        if audio:
            wav = tmp.with_suffix(".orig.wav")
            write_tone(wav, samples_for_frames(total, fps, sample_rate), sample_rate, freq=220.0, seed=1)
            cmd += ["-i", str(wav)]
        cmd += ["-map", "[vout]"]
        if audio:
            cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", "192k"]
        cmd += ["-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p"]
        cmd += ["-r", rate, "-fps_mode", "cfr", "-frames:v", str(total), str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if wav is not None:
            wav.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise MediaError(f"{path}: could not synthesise film: {proc.stderr.strip()}")
    cuts = tuple(int(c) for c in np.cumsum(shot_lengths)[:-1])
    return SynthFilm(out, fps, total, cuts, w, h, sample_rate)


def tone(n_samples: int, sample_rate: int, freq: float = 440.0, seed: int = 0, amplitude: float = 0.25) -> np.ndarray:
    """A deterministic test signal: a tone with a slow amplitude envelope plus a little noise."""
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + seed)
    signal = amplitude * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n_samples)
    return signal.astype(np.float32)


def write_tone(
    path: str | Path, n_samples: int, sample_rate: int, *, freq: float = 440.0, seed: int = 0, channels: int = 1
) -> Path:
    data = tone(n_samples, sample_rate, freq, seed)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="FLOAT", format="WAV")
    return Path(path)


@dataclass(frozen=True)
class MovingFace:
    path: Path
    fps: Fraction
    frame_count: int
    truth: tuple[tuple[float, float, float, float], ...]  # true face box per frame (where it would be, if blanked)
    blanked: frozenset[int]


def make_moving_face(
    path: str | Path,
    image: np.ndarray,
    face_box: tuple[float, float, float, float],
    *,
    frames: int = 75,
    fps: Fraction = Fraction(25),
    size: tuple[int, int] = (640, 360),
    scale: tuple[float, float] = (0.45, 0.7),
    blank: frozenset[int] = frozenset(),
    seed: int = 0,
) -> MovingFace:
    """A shot of ``image`` (a photo with a face at ``face_box``) sliding and growing over a
    textured background along a known path.  Frames in ``blank`` show the background
    only (the face is gone).  ``truth[i]`` is the face box in frame ``i``: ``face_box``
    mapped through the exact scale and offset of that frame (for a blanked frame,
    where the face would have been)."""
    import cv2

    from .frames import EncodeSettings, FrameWriter

    w, h = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 200, (h, w, 3), dtype=np.uint8), (0, 0), 6)
    truth: list[tuple[float, float, float, float]] = []
    ih, iw = image.shape[:2]
    with FrameWriter(path, width=w, height=h, fps=fps, pix_fmt="bgr24",
                     settings=EncodeSettings(crf=16, preset="veryfast", pix_fmt="yuv420p"), expected_frames=frames) as writer:
        for i in range(frames):
            t = i / max(1, frames - 1)
            s = scale[0] + (scale[1] - scale[0]) * t
            sw, sh = max(1, round(iw * s)), max(1, round(ih * s))
            ox = round((w - sw) * (0.1 + 0.8 * t))
            oy = round((h - sh) * (0.5 + 0.4 * np.sin(2 * np.pi * t)) / 1.0) if h > sh else round((h - sh) / 2)
            frame = background.copy()
            sx, sy = sw / iw, sh / ih
            bx1, by1, bx2, by2 = face_box
            truth.append((ox + bx1 * sx, oy + by1 * sy, ox + bx2 * sx, oy + by2 * sy))
            if i not in blank:
                scaled = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
                # Paste with clipping at the frame's edges.
                x0, y0 = max(ox, 0), max(oy, 0)
                x1, y1 = min(ox + sw, w), min(oy + sh, h)
                frame[y0:y1, x0:x1] = scaled[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            writer.write(frame)
    return MovingFace(Path(path), fps, frames, tuple(truth), frozenset(blank))
