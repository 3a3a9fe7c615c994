"""Audio extraction, resampling and stem mixing, streamed in blocks.

Exact length: a film of ``N`` frames at ``fps`` takes exactly
``samples_for_frames(N, fps, sample_rate)`` samples of audio; a dub track within
one frame of that is padded with silence or trimmed to it, a track further off is
refused (or, with ``length_policy="pad"``, padded/trimmed and logged).
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import soundfile as sf

from dubcore.schema import atomic_path
from dubcore.timebase import format_rate, samples_for_frames

from .errors import MediaError
from .probe import AudioStream, MediaInfo, media_arg, probe, require_tool

log = logging.getLogger(__name__)

BLOCK = 1 << 16  # samples per block when streaming audio

LengthPolicy = Literal["strict", "pad"]


def audio_stream(info: MediaInfo, index: int | None = None) -> AudioStream:
    if not info.audio:
        raise MediaError(f"{info.path}: has no audio stream; give a file with sound")
    if index is None:
        return info.audio[0]
    for stream in info.audio:
        if stream.index == index:
            return stream
    raise MediaError(f"{info.path}: no audio stream with index {index} (has {[a.index for a in info.audio]})")


def to_wav(
    src: str | Path,
    dst: str | Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    stream_index: int | None = None,
    info: MediaInfo | None = None,
    subtype: str = "FLOAT",
) -> Path:
    """Decode the audio of ``src`` into a WAV at ``dst`` (atomically), resampled with soxr if asked."""
    info = info or probe(src)
    stream = audio_stream(info, stream_index)
    codec = {"FLOAT": "pcm_f32le", "PCM_16": "pcm_s16le", "PCM_24": "pcm_s24le"}[subtype]
    with atomic_path(dst) as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(src)]
        cmd += ["-map", f"0:{stream.index}", "-vn", "-sn", "-dn", "-c:a", codec]
        if sample_rate and sample_rate != stream.sample_rate:
            cmd += ["-af", f"aresample={sample_rate}:resampler=soxr:precision=28"]
            cmd += ["-ar", str(sample_rate)]
        if channels:
            cmd += ["-ac", str(channels)]
        cmd += ["-f", "wav", media_arg(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MediaError(f"{src}: audio decode failed: {proc.stderr.strip()}")
    return Path(dst)


def read_blocks(path: str | Path, block: int = BLOCK) -> Iterator[np.ndarray]:
    """Float32 blocks ``(n, channels)`` of a WAV/FLAC file."""
    with sf.SoundFile(str(path)) as fh:
        while True:
            data = fh.read(block, dtype="float32", always_2d=True)
            if len(data) == 0:
                return
            yield data


def load_audio(path: str | Path, sample_rate: int, mono: bool = True, workdir: str | Path | None = None) -> np.ndarray:
    """Whole audio of a (short) clip as float32 at ``sample_rate``.  For clips, not films."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        wav = to_wav(path, Path(tmp) / "a.wav", sample_rate=sample_rate, channels=1 if mono else None)
        data, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    return data[:, 0] if mono else data


@dataclass(frozen=True)
class Stem:
    """One input of the dubbed mix: a file and the role it plays (a character name or ``"me"``)."""

    path: Path
    role: str
    gain_db: float = 0.0


@dataclass(frozen=True)
class MixResult:
    path: Path
    sample_rate: int
    channels: int
    samples: int
    notes: tuple[str, ...]


def _place(block: np.ndarray, channels: int) -> np.ndarray:
    """Map a stem's channels onto the mix layout.  A mono stem goes to both sides of a
    stereo mix and to the centre of a 5.1 or 7.1 mix (dialogue convention)."""
    have = block.shape[1]
    if have == channels:
        return block
    out = np.zeros((block.shape[0], channels), dtype=np.float32)
    if have == 1:
        if channels in (6, 8):
            out[:, 2] = block[:, 0]
        else:
            out[:, :] = block[:, :1]
        return out
    if have == 2 and channels in (6, 8):
        out[:, 0:2] = block
        return out
    raise MediaError(f"cannot place a {have}-channel stem into a {channels}-channel mix; give stems in mono, stereo or the mix layout")


def mix_stems(
    stems: Sequence[Stem],
    dst: str | Path,
    *,
    frame_count: int,
    fps: Fraction,
    sample_rate: int = 48000,
    length_policy: LengthPolicy = "strict",
    workdir: str | Path,
) -> MixResult:
    """Sum ``stems`` into one WAV whose length matches ``frame_count`` frames exactly.

    Every stem is decoded and resampled (logged) to ``sample_rate``, checked
    against the film's length, then summed block by block (constant memory).  The
    mix keeps the widest channel layout among the stems.
    """
    if not stems:
        raise MediaError("no dub audio given; the manifest needs a dialogue stem or character stems")
    target = samples_for_frames(frame_count, fps, sample_rate)
    one_frame = samples_for_frames(1, fps, sample_rate)
    notes: list[str] = []
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    decoded: list[tuple[Stem, Path, int]] = []
    channels = 1
    for i, stem in enumerate(stems):
        info = probe(stem.path)
        stream = audio_stream(info)
        if stream.sample_rate != sample_rate:
            note = f"{stem.path}: resampled from {stream.sample_rate} Hz to {sample_rate} Hz"
            log.info(note)
            notes.append(note)
        wav = to_wav(stem.path, work / f"stem{i:02d}.wav", sample_rate=sample_rate, info=info)
        with sf.SoundFile(str(wav)) as fh:
            n, ch = fh.frames, fh.channels
        diff = n - target
        if abs(diff) > one_frame:
            msg = (
                f"{stem.path}: dub track is {n} samples ({n / sample_rate:.3f} s) at {sample_rate} Hz, the film is "
                f"{frame_count} frames at {format_rate(fps)} fps = {target} samples ({target / sample_rate:.3f} s); "
                f"{'longer' if diff > 0 else 'shorter'} by {abs(diff) / sample_rate:.3f} s, more than one frame"
            )
            if length_policy != "pad":
                raise MediaError(msg + ". Conform the track to the picture, or set options.audio_length_policy: pad")
            note = msg + "; padded with silence / trimmed to the picture (audio_length_policy=pad)"
            log.warning(note)
            notes.append(note)
        elif diff:
            notes.append(f"{stem.path}: {abs(diff)} samples {'trimmed' if diff > 0 else 'of silence added'} to match the picture")
        decoded.append((stem, wav, ch))
        channels = max(channels, ch)

    readers = [(sf.SoundFile(str(wav)), 10 ** (stem.gain_db / 20.0)) for stem, wav, _ in decoded]
    peak = 0.0
    try:
        with atomic_path(dst) as tmp:
            with sf.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=channels, subtype="FLOAT", format="WAV") as out:
                written = 0
                while written < target:
                    n = min(BLOCK, target - written)
                    acc = np.zeros((n, channels), dtype=np.float32)
                    for fh, gain in readers:
                        data = fh.read(n, dtype="float32", always_2d=True)
                        if len(data):
                            acc[: len(data)] += _place(data, channels) * np.float32(gain)
                    peak = max(peak, float(np.abs(acc).max(initial=0.0)))
                    out.write(acc)
                    written += n
    finally:
        for fh, _ in readers:
            fh.close()
    if peak > 1.0:
        note = f"mix peaks at {20 * np.log10(peak):+.1f} dBFS (above full scale); lower stem gains to avoid clipping in delivery"
        log.warning(note)
        notes.append(note)
    return MixResult(Path(dst), sample_rate, channels, target, tuple(notes))
