"""MFCC as ``python_speech_features.mfcc`` computes it, without needing that package (no torch here).

Both audio-visual models that read MFCC were trained on ``python_speech_features``:
Light-ASD (:class:`lipsync.models.light_asd.LightASDContract`) with the reference's
arguments, SyncNet (:class:`lipsync.models.syncnet.SyncNetContract`) with the
package's defaults -- the same numbers.  Each model's contract carries the
``mfcc_*`` fields; :func:`mfcc_params` reads them into an :class:`MfccParams`.

The computation (:func:`mfcc`): the signal on the 16-bit PCM scale
(``audio_scale``), pre-emphasis ``y[n] = x[n] - preemph * x[n-1]`` (the first
sample kept), zero padding to whole frames after the filter, rectangular frames of
``winlen`` seconds every ``winstep`` seconds, power spectrum ``|rfft(frame,
nfft)|^2 / nfft``, ``nfilt`` triangular filters on the HTK mel scale from 0 Hz to
Nyquist placed on FFT bins as the package places them, log (``eps`` floor),
orthonormal DCT-II, ``numcep`` coefficients, sinusoidal lifter ``ceplifter``, and
coefficient 0 replaced by the log frame energy (``append_energy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MfccParams", "mfcc", "mfcc_params"]


@dataclass(frozen=True)
class MfccParams:
    """The numbers of one ``python_speech_features.mfcc`` call (its defaults, at 16 kHz)."""

    sample_rate: int = 16000
    numcep: int = 13
    winlen: float = 0.025
    winstep: float = 0.010
    nfilt: int = 26
    nfft: int = 512
    preemph: float = 0.97
    ceplifter: int = 22
    append_energy: bool = True
    audio_scale: float = 32768.0  # float audio (-1..1) is put on the 16-bit PCM scale

    @property
    def samples_per_step(self) -> int:
        """Audio samples between MFCC steps (160)."""
        return int(round(self.winstep * self.sample_rate))

    @property
    def window_samples(self) -> int:
        """Audio samples in one MFCC window (400)."""
        return int(round(self.winlen * self.sample_rate))


def mfcc_params(contract: Any) -> MfccParams:
    """The :class:`MfccParams` of a model contract with ``sample_rate``, ``audio_scale`` and the ``mfcc_*`` fields
    (:class:`~lipsync.models.light_asd.LightASDContract`, :class:`~lipsync.models.syncnet.SyncNetContract`)."""
    if isinstance(contract, MfccParams):
        return contract
    c = contract
    return MfccParams(
        sample_rate=c.sample_rate,
        numcep=c.mfcc_dims,
        winlen=c.mfcc_winlen,
        winstep=c.mfcc_winstep,
        nfilt=c.mfcc_nfilt,
        nfft=c.mfcc_nfft,
        preemph=c.mfcc_preemph,
        ceplifter=c.mfcc_ceplifter,
        append_energy=c.mfcc_append_energy,
        audio_scale=c.audio_scale,
    )


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _filterbank(nfilt: int, nfft: int, sample_rate: int) -> np.ndarray:
    """Triangular mel filters on FFT bins, ``(nfilt, nfft // 2 + 1)``, as python_speech_features builds them."""
    mel = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / sample_rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


_FB_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def mfcc(signal: np.ndarray, params: MfccParams | None = None, *, steps: int | None = None) -> np.ndarray:
    """MFCC ``(steps, numcep)`` float32 of a mono signal, identical to ``python_speech_features.mfcc`` with ``params``.

    ``signal`` is float audio in -1..1 (it is put on the 16-bit PCM scale,
    rounded and clipped, as a ``wavfile.read`` of an ``s16le`` WAV gives it) or
    integer PCM (used as is).  Step ``k`` is the window starting at sample
    ``k * samples_per_step``; the signal is zero-padded at the end as needed.
    ``steps`` fixes the number of steps (default: python_speech_features' count,
    ``1 + ceil((len - window) / step)``).
    """
    p = params or MfccParams()
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ValueError(f"mfcc: expected a mono signal, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        x = np.clip(np.round(x.astype(np.float64) * p.audio_scale), -p.audio_scale, p.audio_scale - 1)
    else:
        x = x.astype(np.float64)
    hop, win = p.samples_per_step, p.window_samples
    if steps is None:
        steps = 1 if len(x) <= win else 1 + int(np.ceil((len(x) - win) / hop))
    if steps <= 0:
        return np.zeros((0, p.numcep), dtype=np.float32)
    need = (steps - 1) * hop + win
    x = x[:need]
    # Pre-emphasis (the first sample kept as is), then zero padding to whole frames, as
    # python_speech_features does it (padding after the filter), then frames of 400, hop 160.
    y = np.zeros(need)
    if len(x):
        y[0] = x[0]
        y[1 : len(x)] = x[1:] - p.preemph * x[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop][:steps]
    pspec = np.square(np.abs(np.fft.rfft(frames, p.nfft))) / p.nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    key = (p.nfilt, p.nfft, p.sample_rate)
    fb = _FB_CACHE.get(key)
    if fb is None:
        fb = _FB_CACHE.setdefault(key, _filterbank(*key))
    feat = pspec @ fb.T
    feat = np.where(feat == 0, eps, feat)
    from scipy.fft import dct

    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, : p.numcep]
    if p.ceplifter > 0:
        n = np.arange(p.numcep)
        cep = cep * (1 + (p.ceplifter / 2.0) * np.sin(np.pi * n / p.ceplifter))
    if p.append_energy:
        cep[:, 0] = np.log(energy)
    return cep.astype(np.float32)
