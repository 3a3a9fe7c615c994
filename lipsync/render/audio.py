"""The audio side of a shot render: each track's audio read from its WAV, and the mel window of each frame."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from dubcore.timebase import FrameRange, frame_to_sample


def read_track_audio(path: str | Path, frames: FrameRange, fps: Fraction, sample_rate: int, tail_samples: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` from the first sample of ``frames`` to ``tail_samples`` past its end."""
    info = sf.info(str(path))
    if info.samplerate != sample_rate:
        raise ValueError(
            f"{path}: audio at {info.samplerate} Hz, the lip-sync model needs {sample_rate} Hz; "
            f"resample it first (lipsync.media.audio.to_wav(..., sample_rate={sample_rate}))"
        )
    start = frame_to_sample(frames.start, fps, sample_rate)
    stop = frame_to_sample(frames.end, fps, sample_rate) + tail_samples
    data, _ = sf.read(str(path), start=min(start, info.frames), stop=min(stop, info.frames), dtype="float32", always_2d=True)
    return data.mean(axis=1)


class _Windows:
    """The mel window of any frame of a shot, computed from the shot's audio a block at a time.

    Memory does not grow with the shot: only one block of mel columns (30 s) is kept.
    Each block is the mel of an audio excerpt with a margin of ``_MARGIN_HOPS`` hops on
    both sides; a mel column depends only on the samples under its window (and the
    one before, for pre-emphasis), so the columns kept are exactly those of the
    whole-shot spectrogram; the true ends of the audio keep their reflect padding.
    """

    _BLOCK_COLS = 2400  # 30 s at 80 columns a second
    _MARGIN_HOPS = 4  # 800 samples >= half an FFT (400) + 1 sample of pre-emphasis history

    def __init__(self, audio: np.ndarray, fps: Fraction, contract: Any) -> None:
        self.audio, self.fps, self.contract = audio, fps, contract
        self._block: tuple[int, np.ndarray] | None = None  # (first column, mel columns)

    def _columns(self, c0: int, c1: int) -> np.ndarray:
        """Exact mel columns ``[c0, c1)`` of the whole audio (padded with silence past its end)."""
        from ..audio.mel import melspectrogram

        hop = self.contract.hop_length
        total = 1 + len(self.audio) // hop
        a = max(0, (c0 - self._MARGIN_HOPS) * hop)
        b = min(len(self.audio), (c1 + self._MARGIN_HOPS) * hop)
        if b >= len(self.audio):
            b = len(self.audio)
        mel = melspectrogram(self.audio[a:b], self.contract)
        first = a // hop  # column j of ``mel`` is column first + j of the whole audio
        out = np.full((mel.shape[0], c1 - c0), self.contract.mel.silence_value, dtype=np.float32)
        lo, hi = max(c0, first), min(c1, first + mel.shape[1], total)
        if hi > lo:
            out[:, lo - c0 : hi - c0] = mel[:, lo - first : hi - first]
        return out

    def __getitem__(self, frame: int) -> np.ndarray:
        from ..audio.mel import mel_window_start

        c = self.contract
        start = mel_window_start(frame, self.fps, c)
        if self._block is None or not (self._block[0] <= start and start + c.mel_step <= self._block[0] + self._block[1].shape[1]):
            c0 = start
            self._block = (c0, self._columns(c0, c0 + self._BLOCK_COLS + c.mel_step))
        c0, cols = self._block
        return cols[None, :, start - c0 : start - c0 + c.mel_step].copy()


