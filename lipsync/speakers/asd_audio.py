"""Active speaker detection, the audio side: the film's 16 kHz track and each face track's MFCC.

Part of :mod:`lipsync.speakers.asd` (which re-exports these names; its docstring,
"Audio", gives the alignment rule): :func:`audio_16k_memmap` decodes a film's
audio once to a memory-mapped 16 kHz float32 file, :func:`track_mfcc` reads the
MFCC (:mod:`lipsync.audio.mfcc`, with the Light-ASD contract's numbers) of the
samples under a track, silence outside the array.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import frame_to_sample

if TYPE_CHECKING:  # torch is imported only by the functions that run the model
    from lipsync.models.light_asd import LightASDContract

__all__ = ["audio_16k_memmap", "track_audio_start", "track_mfcc"]


def track_audio_start(track: FaceTrack, audio_start_frame: int, fps: Fraction, sample_rate: int) -> int:
    """Sample of the 16 kHz array at which the track's first frame starts (may be negative)."""
    offset = track.frames.start - int(audio_start_frame)
    sign = -1 if offset < 0 else 1
    return sign * frame_to_sample(abs(offset), fps, sample_rate, "round")


def track_mfcc(
    audio_16k: np.ndarray, start_sample: int, model_frames: int, contract: "LightASDContract | None" = None
) -> np.ndarray:
    """``(4 * model_frames, 13)`` MFCC of the audio from ``start_sample`` (silence outside the array)."""
    from lipsync.models.light_asd import LightASDContract, mfcc

    c = contract or LightASDContract()
    steps = c.audio_steps_per_frame * model_frames
    need = (steps - 1) * c.samples_per_step + c.window_samples
    seg = np.zeros(need, dtype=np.float32)
    a0, a1 = max(start_sample, 0), min(start_sample + need, len(audio_16k))
    if a1 > a0:
        seg[a0 - start_sample : a1 - start_sample] = np.asarray(audio_16k[a0:a1], dtype=np.float32)
    return mfcc(seg, c, steps=steps)


def audio_16k_memmap(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, stream_index: int | None = None) -> np.ndarray:
    """Decode the audio of ``src`` to raw 16 kHz mono float32 at ``dst`` and map it read-only.

    For films: the scorer reads only each track's samples, so the whole
    soundtrack never has to sit in memory.
    """
    from dubcore.schema import atomic_path
    from lipsync.media.audio import audio_stream
    from lipsync.media.errors import MediaError
    from lipsync.media.probe import media_arg, probe, require_tool

    info = probe(src)
    stream = audio_stream(info, stream_index)
    with atomic_path(dst, suffix=".f32") as tmp:
        cmd = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", media_arg(src)]
        cmd += ["-map", f"0:{stream.index}", "-vn", "-sn", "-dn", "-ac", "1"]
        cmd += ["-af", "aresample=16000:resampler=soxr:precision=28", "-ar", "16000", "-c:a", "pcm_f32le", "-f", "f32le", media_arg(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise MediaError(f"{src}: audio decode failed: {proc.stderr.strip()}")
    if os.path.getsize(dst) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(dst, dtype="<f4", mode="r")
