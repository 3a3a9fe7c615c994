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
from .probe import media_arg, require_tool

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
            cmd += ["-i", media_arg(wav)]
        cmd += ["-map", "[vout]"]
        if audio:
            cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", "192k"]
        cmd += ["-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p"]
        cmd += ["-r", rate, "-fps_mode", "cfr", "-frames:v", str(total), media_arg(tmp)]
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


@dataclass(frozen=True)
class SceneTurn:
    """One turn of a generated dialogue scene: who speaks (``left``, ``right`` or ``None`` for a
    voice off screen), the frames it covers and the samples where its voice is heard."""

    side: str | None
    clip: Path
    frames: tuple[int, int]
    speech: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DialogueScene:
    path: Path
    fps: Fraction
    frame_count: int
    sample_rate: int
    width: int
    height: int
    turns: tuple[SceneTurn, ...]

    def speech_of(self, side: str | None) -> list[tuple[int, int]]:
        return [s for t in self.turns if t.side == side for s in t.speech]


def _clip_frames(path: Path) -> list[np.ndarray]:
    from .frames import FrameReader

    with FrameReader(path) as reader:
        return [f.copy() for f in reader]


def _idle_loop(frames: Sequence[np.ndarray], tail: int = 12) -> list[np.ndarray]:
    """A ping-pong of the clip's last ``tail`` frames (mouth closed after the sentence)."""
    end = list(frames[-tail:])
    return end + end[-2:0:-1]


def make_dialogue_scene(
    path: str | Path,
    faces: dict[str, str | Path],
    turns: Sequence[tuple[str | None, str | Path]],
    *,
    sample_rate: int = 16000,
    audio_codec: Sequence[str] = ("-c:a", "pcm_s16le"),
) -> DialogueScene:
    """Two talking-face clips side by side (``faces['left']``, ``faces['right']``, same size and
    rate), taking turns.  In each turn ``(side, clip)`` the ``side`` face plays ``clip`` (a clip
    of that same person) with its sound while the other face idles on a loop of its own closing
    frames; with ``side=None`` both faces idle and ``clip``'s voice is heard off screen.  The
    soundtrack is the turns' audio end to end (mono, ``sample_rate``); ``speech`` of each turn
    comes from an energy voice-activity detector on its clip's audio."""
    from lipsync.speakers.activity import speech_spans

    from .audio import load_audio
    from .frames import EncodeSettings, FrameWriter
    from .probe import probe

    left, right = Path(faces["left"]), Path(faces["right"])
    video = probe(left).require_video()
    fps, w, h = video.fps, video.width, video.height
    idle = {"left": _idle_loop(_clip_frames(left)), "right": _idle_loop(_clip_frames(right))}
    out = Path(path)
    audio_parts: list[np.ndarray] = []
    made: list[SceneTurn] = []
    frame = 0
    sample = 0
    wav = out.with_name(out.stem + ".scene-audio.wav")
    with FrameWriter(out.with_name(out.stem + ".scene-video.mkv"), width=2 * w, height=h, fps=fps, pix_fmt="bgr24",
                     settings=EncodeSettings(crf=12, preset="veryfast", pix_fmt="yuv420p")) as writer:
        for side, clip in turns:
            clip = Path(clip)
            talking = _clip_frames(clip) if side is not None else []
            n = len(talking) or probe(clip).require_video().frame_count
            for i in range(n):
                halves = {s: idle[s][(frame + i) % len(idle[s])] for s in ("left", "right")}
                if side is not None:
                    halves[side] = talking[i]
                writer.write(np.ascontiguousarray(np.concatenate([halves["left"], halves["right"]], axis=1)))
            voice = load_audio(clip, sample_rate)
            n_samples = samples_for_frames(frame + n, fps, sample_rate) - sample
            voice = np.pad(voice[:n_samples], (0, max(0, n_samples - len(voice))))
            audio_parts.append(voice)
            speech = tuple((sample + a, sample + b) for a, b in speech_spans(voice, sample_rate))
            made.append(SceneTurn(side, clip, (frame, frame + n), speech))
            frame += n
            sample += n_samples
    sf.write(str(wav), np.concatenate(audio_parts), sample_rate, subtype="PCM_16")
    video_tmp = out.with_name(out.stem + ".scene-video.mkv")
    with atomic_path(out) as tmp:
        subprocess.run([require_tool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-i", media_arg(video_tmp), "-i", media_arg(wav),
                        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *audio_codec, media_arg(tmp)], check=True)
    video_tmp.unlink()
    wav.unlink()
    return DialogueScene(out, fps, frame, sample_rate, 2 * w, h, tuple(made))


def place_speech(path: str | Path, total_samples: int, sample_rate: int, lines: Sequence[tuple[int, str | Path]]) -> Path:
    """A mono WAV of ``total_samples`` silence with the audio of each ``(start_sample, clip)`` laid in."""
    from .audio import load_audio

    data = np.zeros(total_samples, np.float32)
    for start, clip in lines:
        voice = load_audio(clip, sample_rate)[: max(0, total_samples - start)]
        data[start : start + len(voice)] += voice
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)
