"""Wav2Lip's mel spectrogram, and one mel window per video frame placed by exact time.

Features (:func:`melspectrogram`), exactly the reference's ``audio.py`` with its
``hparams.py`` (Rudrabha/Wav2Lip), whose numbers are in :class:`MelContract`:

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``scipy.signal.lfilter([1, -0.97], [1], x)``);
2. STFT, ``n_fft`` 800, hop 200, periodic Hann window of 800, ``center=True`` with
   **reflect** padding of ``n_fft // 2`` on both sides -- what librosa 0.7 (the
   reference's pin) did by default.  librosa >= 0.10 zero-pads by default, so the
   STFT is computed here with numpy (librosa is not imported at all) and the
   numbers do not depend on a librosa version;
   ``T = 1 + len(wav) // hop`` columns, column ``t`` centred on sample ``t * hop``;
3. magnitude, then the Slaney mel filter bank, 80 bands from 55 to 7600 Hz: the
   filters of ``librosa.filters.mel(..., htk=False, norm="slaney")`` (librosa 0.7's
   defaults ``htk=False, norm=1`` are the same filters), also computed with numpy;
4. ``20 * log10(max(1e-5, S)) - 20`` dB, then symmetric normalisation to
   ``[-4, 4]`` with clipping: ``clip(8 * (S + 100) / 100 - 4, -4, 4)``.

Digital silence therefore maps to the floor, ``-4`` (:attr:`MelContract.silence_value`).

Alignment (:func:`mel_window_start`, :func:`mel_windows`): video frame ``i`` at
``fps`` starts at the exact time ``i / fps`` s, i.e. sample ``i * 16000 / fps``;
its window is the ``mel_step`` (16) columns starting at mel column
``floor(i * 16000 / fps / 200) = floor(i * 80 / fps)`` -- the reference's
``int(80. * i / fps)`` in training and inference, so what the published
checkpoints expect (:attr:`MelContract.window_rounding`; ``"round"`` picks the
column nearest the frame's start instead).  It is computed from the absolute
frame index with exact rational arithmetic (:mod:`dubcore.timebase`), so frame
250,000 of a 24000/1001 film lands where it should (the reference's float
product can truncate one column low where ``i * 80 / fps`` is a whole number,
first at frame 300 of a 24000/1001 clip; here it is exact).  The ``rounding``
argument of the functions below defaults to the contract's.
:func:`window_sample_starts` gives the audio sample at which each frame starts,
``round_half_up(i * 16000 / fps)``; the floor column is centred at most one hop
before it (``"round"``: within ``hop / 2``).

Audio length rule: the audio is assumed to start at the first frame.  A window
that runs past the end of the mel (audio shorter than the video, or the last
frames' windows, which look 200 ms ahead) is padded with the mel of silence
(``silence_value``), never by repeating or shifting real audio, and no frame is
ever dropped: there are always exactly ``frame_count`` windows.  Audio longer
than the video is not trimmed -- the last windows read the real audio that
follows their frame -- and everything after the last window is ignored.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from dubcore.timebase import RateLike, frame_to_sample, parse_rate

__all__ = [
    "DEFAULT_MEL",
    "MelContract",
    "mel_window_start",
    "mel_window_starts",
    "mel_windows",
    "melspectrogram",
    "window_sample_starts",
]

_ROUNDINGS = ("round", "floor", "ceil")
_INT64_SAFE = 1 << 62
_CHUNK_COLUMNS = 4096  # STFT columns per block: bounds memory on feature-length audio


@dataclass(frozen=True)
class MelContract:
    """The mel features a model was trained on, and the window it reads per frame.

    Defaults are Wav2Lip's ``hparams.py``.  ``mel_step`` is the number of mel
    columns in one window (16 columns = 200 ms at 80 columns per second);
    ``window_rounding`` how a frame's first column is rounded from ``i * 80 / fps``
    (``"floor"``: the reference's ``int()``, what the published checkpoints were
    trained and run with; ``"round"``: the nearest column; ``"ceil"``).
    """

    sample_rate: int = 16000
    n_fft: int = 800
    hop_length: int = 200
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0
    mel_step: int = 16
    window_rounding: str = "floor"

    def __post_init__(self) -> None:
        if self.window_rounding not in _ROUNDINGS:
            raise ValueError(f"window_rounding must be one of {_ROUNDINGS}, got {self.window_rounding!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax {self.fmax} above Nyquist {self.sample_rate / 2}")
        if min(self.sample_rate, self.hop_length, self.n_mels, self.mel_step) <= 0:
            raise ValueError("sample_rate, hop_length, n_mels and mel_step must be positive")

    @property
    def steps_per_second(self) -> Fraction:
        """Exact mel column rate (``Fraction(80)`` for 16 kHz / hop 200)."""
        return Fraction(self.sample_rate, self.hop_length)

    @property
    def silence_value(self) -> float:
        """The normalised mel value of digital silence (the clipping floor, -4.0)."""
        return float(_normalize(np.array([_amp_to_db(np.array([0.0]), self)[0] - self.ref_level_db]), self)[0])


#: Wav2Lip's features (16 kHz, 80 mels, hop 200, 16-column windows).
DEFAULT_MEL = MelContract()


def _mel_contract(contract: Any) -> MelContract:
    """A :class:`MelContract` from itself or from a model contract carrying ``.mel``."""
    if contract is None:
        return DEFAULT_MEL
    if isinstance(contract, MelContract):
        return contract
    inner = getattr(contract, "mel", None)
    if isinstance(inner, MelContract):
        return inner
    raise TypeError(f"expected a MelContract or a model contract with a .mel MelContract, got {type(contract).__name__}")


# --------------------------------------------------------------------------- features


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def _mel_basis(c: MelContract) -> np.ndarray:
    """Slaney mel filter bank ``(n_mels, n_fft // 2 + 1)``: triangles on the Slaney mel scale, area-normalised.

    The same filters as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax,
    htk=False, norm="slaney")`` (librosa 0.7's ``norm=1``), computed here so the
    features depend on no librosa version; a test compares the two.
    """
    fft_freqs = np.fft.rfftfreq(c.n_fft, d=1.0 / c.sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(c.fmin), _hz_to_mel(c.fmax), c.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[: c.n_mels] / fdiff[: c.n_mels, None]
    upper = ramps[2 : c.n_mels + 2] / fdiff[1 : c.n_mels + 1, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : c.n_mels + 2] - mel_f[: c.n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _window(c: MelContract) -> np.ndarray:
    """Periodic Hann of ``win_length`` centred in ``n_fft`` (librosa's ``get_window`` + ``pad_center``)."""
    n = np.arange(c.win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / c.win_length)
    left = (c.n_fft - c.win_length) // 2
    out = np.zeros(c.n_fft, dtype=np.float64)
    out[left : left + c.win_length] = w
    return out


def _amp_to_db(x: np.ndarray, c: MelContract) -> np.ndarray:
    min_level = 10.0 ** (c.min_level_db / 20.0)
    return 20.0 * np.log10(np.maximum(min_level, x))


def _normalize(s: np.ndarray, c: MelContract) -> np.ndarray:
    m = c.max_abs_value
    return np.clip((2.0 * m) * ((s - c.min_level_db) / (-c.min_level_db)) - m, -m, m)


def _stft_magnitude_mel(y: np.ndarray, c: MelContract) -> np.ndarray:
    """Mel-filtered STFT magnitude ``(n_mels, 1 + len(y) // hop)`` of pre-emphasised ``y`` (float64)."""
    half = c.n_fft // 2
    padded = np.pad(y, half, mode="reflect") if len(y) > 1 else np.pad(y, half, mode="edge")
    columns = 1 + len(y) // c.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length][:columns]
    window, basis = _window(c), _mel_basis(c)
    out = np.empty((c.n_mels, columns), dtype=np.float64)
    for start in range(0, columns, _CHUNK_COLUMNS):
        block = frames[start : start + _CHUNK_COLUMNS] * window
        mag = np.abs(np.fft.rfft(block, n=c.n_fft, axis=1))  # (cols, n_fft // 2 + 1)
        out[:, start : start + len(block)] = basis @ mag.T
    return out


def melspectrogram(wav_16k: np.ndarray, contract: Any = None) -> np.ndarray:
    """Wav2Lip mel spectrogram of mono audio at ``contract.sample_rate`` (16 kHz): ``(80, T)`` float32.

    ``wav_16k`` is 1-D float audio in [-1, 1] (any float dtype); ``T = 1 +
    len(wav) // 200``.  Empty audio gives one column of silence.  Raises
    :class:`ValueError` for multi-channel or non-finite input and
    :class:`TypeError` for integer samples (convert to float first).
    """
    c = _mel_contract(contract)
    wav = np.asarray(wav_16k)
    if wav.ndim != 1:
        raise ValueError(f"melspectrogram needs mono 1-D audio, got shape {wav.shape}; downmix first")
    if not np.issubdtype(wav.dtype, np.floating):
        raise TypeError(f"melspectrogram needs float samples in [-1, 1], got {wav.dtype}; convert (e.g. int16 / 32768)")
    if not np.all(np.isfinite(wav)):
        raise ValueError("audio contains NaN or infinite samples")
    if wav.size == 0:
        return np.full((c.n_mels, 1), c.silence_value, dtype=np.float32)
    from scipy.signal import lfilter

    y = lfilter([1.0, -c.preemphasis], [1.0], wav.astype(np.float64))
    s = _amp_to_db(_stft_magnitude_mel(y, c), c) - c.ref_level_db
    return _normalize(s, c).astype(np.float32)


# --------------------------------------------------------------------------- alignment


def _exact_round(num: np.ndarray, den: int, rounding: str) -> np.ndarray:
    """``num / den`` rounded like :mod:`dubcore.timebase` (``round`` = half up), in integers."""
    if rounding == "round":
        return (2 * num + den) // (2 * den)
    if rounding == "floor":
        return num // den
    if rounding == "ceil":
        return -((-num) // den)
    raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")


def _frame_times(frame_count: int, fps: RateLike, scale: int, divisor: int, start_frame: int, rounding: str) -> np.ndarray:
    """``rounding(i * scale / (fps * divisor))`` for ``i`` in ``[start_frame, start_frame + frame_count)``, exactly."""
    if frame_count < 0 or start_frame < 0:
        raise ValueError(f"frame_count and start_frame must be >= 0, got {frame_count}, {start_frame}")
    rate = parse_rate(fps)
    p = scale * rate.denominator  # value = i * p / q
    q = divisor * rate.numerator
    last = start_frame + frame_count
    if 2 * last * p + q < _INT64_SAFE:
        i = np.arange(start_frame, last, dtype=np.int64)
        return _exact_round(i * p, q, rounding).astype(np.int64)
    # Huge indices or exotic rates: Python integers, still exact.
    vals = [int(v) for v in _exact_round(np.arange(start_frame, last, dtype=object) * p, q, rounding)]
    return np.array(vals, dtype=np.int64)


def mel_window_start(frame_index: int, fps: RateLike, contract: Any = None, *, rounding: str | None = None) -> int:
    """First mel column of video frame ``frame_index``'s window: ``floor(i * sr / fps / hop)`` by default.

    Exact (:func:`dubcore.timebase.frame_to_sample` at the mel column rate).
    ``rounding`` (None: the contract's ``window_rounding``, ``"floor"``, the
    reference's ``int(i * 80 / fps)`` without its float error; ``"round"``: half
    up).  ``contract`` is a :class:`MelContract` or a model contract
    (``Wav2Lip.contract``); None means Wav2Lip's.
    """
    c = _mel_contract(contract)
    rounding = c.window_rounding if rounding is None else rounding
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    # i * sr / (fps * hop): frame i at a "frame rate" of fps * hop, sampled at sr.
    return frame_to_sample(int(frame_index), parse_rate(fps) * c.hop_length, c.sample_rate, rounding)


def mel_window_starts(
    frame_count: int,
    fps: RateLike,
    contract: Any = None,
    *,
    start_frame: int = 0,
    rounding: str | None = None,
) -> np.ndarray:
    """:func:`mel_window_start` of frames ``start_frame .. start_frame + frame_count - 1`` (int64, vectorised, exact)."""
    c = _mel_contract(contract)
    rounding = c.window_rounding if rounding is None else rounding
    return _frame_times(frame_count, fps, c.sample_rate, c.hop_length, start_frame, rounding)


def window_sample_starts(frame_count: int, fps: RateLike, contract: Any = None, *, start_frame: int = 0) -> np.ndarray:
    """Audio sample (at ``contract.sample_rate``) at which each frame's window starts: ``round_half_up(i * sr / fps)``.

    This is the frame's exact start time in samples; the mel column its window
    starts on (:func:`mel_window_starts`) is centred within ``hop / 2`` of it.
    """
    c = _mel_contract(contract)
    return _frame_times(frame_count, fps, c.sample_rate, 1, start_frame, "round")


def mel_windows(
    mel: np.ndarray,
    frame_count: int,
    fps: RateLike,
    contract: Any = None,
    *,
    start_frame: int = 0,
    rounding: str | None = None,
) -> np.ndarray:
    """One mel window per video frame: ``(frame_count, 1, n_mels, mel_step)`` float32.

    ``mel`` is :func:`melspectrogram` of audio whose sample 0 is frame 0.  Window
    ``k`` belongs to frame ``start_frame + k`` and holds columns
    ``[s, s + mel_step)`` with ``s = mel_window_start(start_frame + k)``; columns
    past the end of ``mel`` are the mel of silence (see the module's audio length
    rule).  Always exactly ``frame_count`` windows.
    """
    c = _mel_contract(contract)
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[0] != c.n_mels:
        raise ValueError(f"mel must be ({c.n_mels}, T), got shape {mel.shape}")
    if frame_count == 0:
        return np.zeros((0, 1, c.n_mels, c.mel_step), dtype=np.float32)
    starts = mel_window_starts(frame_count, fps, c, start_frame=start_frame, rounding=rounding)
    first, need = int(starts[0]), int(starts[-1]) + c.mel_step
    # Only the columns the windows read, padded with silence past the end of the audio.
    src = np.full((c.n_mels, need - first), c.silence_value, dtype=np.float32)
    have = max(0, min(mel.shape[1], need) - first)
    if have:
        src[:, :have] = mel[:, first : first + have]
    view = np.lib.stride_tricks.sliding_window_view(src, c.mel_step, axis=1)  # (n_mels, cols - step + 1, step)
    windows = view[:, starts - first, :].transpose(1, 0, 2)  # (frames, n_mels, step)
    return np.ascontiguousarray(windows[:, None, :, :], dtype=np.float32)

