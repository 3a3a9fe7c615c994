"""The voice encoder's mel features (resemblyzer's GE2E): 40 power mel bands, 25 ms windows every 10 ms.

A different feature from Wav2Lip's (:mod:`lipsync.audio.mel`), not another copy
of it: **power** (not log, not normalised) mel spectrogram, librosa's defaults
(Slaney filters from 0 Hz to Nyquist, periodic Hann window), frames centred on
``k * hop`` with **zero** padding of ``n_fft // 2`` at both ends: what
resemblyzer's ``wav_to_mel_spectrogram`` (``librosa.feature.melspectrogram``,
``center=True``) gives with librosa >= 0.10.  It is computed by librosa itself,
in blocks of frames (each block equal to those frames of one whole-file call), so
that a film's soundtrack never needs one STFT in memory; the speaker diarization
(:mod:`lipsync.speakers.diarize.embedded`) reads it.

:func:`voice_mel_frames` also gives the mean power of the ``hop`` samples around
each frame centre, for resemblyzer's loudness normalisation of a selection of
frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VoiceMelParams", "voice_mel_frames"]


@dataclass(frozen=True)
class VoiceMelParams:
    """resemblyzer's ``hparams`` (``sampling_rate``, ``mel_window_length``, ``mel_window_step``, ``mel_n_channels``)."""

    sample_rate: int = 16000
    window_ms: int = 25
    hop_ms: int = 10
    n_mels: int = 40

    @property
    def n_fft(self) -> int:
        """Samples per window (400)."""
        return self.sample_rate * self.window_ms // 1000

    @property
    def hop(self) -> int:
        """Samples between frames (160)."""
        return self.sample_rate * self.hop_ms // 1000


def voice_mel_frames(
    waveform: np.ndarray, params: VoiceMelParams = VoiceMelParams(), block_frames: int = 6000
) -> tuple[np.ndarray, np.ndarray]:
    """``(mel, power)``: the power mel features ``(T, n_mels)`` float32 of the whole ``waveform``, computed in blocks of
    ``block_frames`` frames (``T = 1 + len // hop``, librosa's ``center=True`` count), and the mean power ``(T,)``
    float32 of the ``hop`` samples around each frame centre."""
    import librosa

    hop, n_fft = params.hop, params.n_fft
    num = 1 + len(waveform) // hop  # librosa center=True frame count
    padded = np.pad(waveform, (n_fft // 2, n_fft // 2))
    mels = []
    for f0 in range(0, num, block_frames):
        f1 = min(num, f0 + block_frames)
        seg = padded[f0 * hop : (f1 - 1) * hop + n_fft]
        m = librosa.feature.melspectrogram(y=seg, sr=params.sample_rate, n_fft=n_fft, hop_length=hop, n_mels=params.n_mels, center=False)
        mels.append(m.T.astype(np.float32))
    mel = np.concatenate(mels)[:num]
    sq = np.pad(waveform.astype(np.float64) ** 2, (hop // 2, hop))
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    starts = np.arange(num) * hop
    power = (csum[starts + hop] - csum[starts]) / hop
    return mel, power.astype(np.float32)
