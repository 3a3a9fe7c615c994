"""Wav2Lip mel features against an independent librosa computation; exact per-frame window placement."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from lipsync.audio.mel import (
    DEFAULT_MEL,
    MelContract,
    mel_window_start,
    mel_window_starts,
    mel_windows,
    melspectrogram,
    window_sample_starts,
)
from conftest import shared

NTSC_FILM = Fraction(24000, 1001)
RATES = [Fraction(25), NTSC_FILM]
SILENCE = DEFAULT_MEL.silence_value


def decode_16k_mono(path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4").copy()


@pytest.fixture(scope="module")
def grid_wav() -> np.ndarray:
    return decode_16k_mono(shared("grid-talking-faces", "bbaf2n.mpg"))


def reference_mel(wav: np.ndarray) -> np.ndarray:
    """Rudrabha/Wav2Lip audio.py + hparams.py, spelled out with explicit librosa calls (reflect padding)."""
    import librosa
    from scipy import signal

    y = signal.lfilter([1, -0.97], [1], wav)
    d = librosa.stft(y, n_fft=800, hop_length=200, win_length=800, window="hann", center=True, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney")
    s = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(d))) - 20
    return np.clip((2 * 4) * ((s - -100) / 100) - 4, -4, 4)


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


# --------------------------------------------------------------------------- features


def test_real_clip_matches_independent_librosa(grid_wav: np.ndarray) -> None:
    ours = melspectrogram(grid_wav)
    ref = reference_mel(grid_wav)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (80, 1 + len(grid_wav) // 200)
    err = float(np.abs(ours - ref).max())
    assert err < 1e-4, f"max abs error {err}"
    assert ours.min() >= -4 and ours.max() <= 4 and ours.max() > 0  # real speech reaches well above the floor


def test_filter_bank_equals_librosa_slaney() -> None:
    import librosa

    from lipsync.audio.mel import _mel_basis

    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney", dtype=np.float64)
    np.testing.assert_allclose(_mel_basis(DEFAULT_MEL), ref, rtol=0, atol=1e-12)


def test_edges_use_reflect_padding_not_zeros(grid_wav: np.ndarray) -> None:
    """librosa >= 0.10 zero-pads by default; the first and last columns show which padding was used."""
    import librosa
    from scipy import signal

    ours = melspectrogram(grid_wav)
    y = signal.lfilter([1, -0.97], [1], grid_wav)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    d0 = librosa.stft(y, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="constant")
    zero = np.clip(8 * ((20 * np.log10(np.maximum(1e-5, basis @ np.abs(d0))) - 20 + 100) / 100) - 4, -4, 4)
    assert np.abs(ours[:, 0] - zero[:, 0]).max() > 1e-2
    np.testing.assert_allclose(ours[:, 2:-2], zero[:, 2:-2], atol=1e-4)  # interior columns see no padding


def test_silence_is_the_floor_and_shapes() -> None:
    assert SILENCE == -4.0
    quiet = melspectrogram(np.zeros(16000, np.float32))
    assert quiet.shape == (80, 81) and np.all(quiet == SILENCE)
    assert melspectrogram(np.zeros(0, np.float32)).shape == (80, 1)
    assert melspectrogram(np.zeros(199, np.float64)).shape == (80, 1)
    assert melspectrogram(np.zeros(200, np.float32)).shape == (80, 2)


def test_bad_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        melspectrogram(np.zeros((2, 1600), np.float32))
    with pytest.raises(TypeError, match="float"):
        melspectrogram(np.zeros(1600, np.int16))
    with pytest.raises(ValueError, match="NaN"):
        melspectrogram(np.array([0.0, np.nan, 0.0]))


def test_contract_is_frozen_and_accepted_from_the_model_contract() -> None:
    from lipsync.models.wav2lip import Wav2Lip

    assert DEFAULT_MEL.steps_per_second == 80
    with pytest.raises(AttributeError):
        DEFAULT_MEL.hop_length = 160  # type: ignore[misc]
    # The training contract: int(3 * 80 / 25) = int(9.6) = 9; the nearest column (10) only on request.
    assert mel_window_start(3, 25, Wav2Lip.contract) == mel_window_start(3, 25, DEFAULT_MEL) == 9
    assert DEFAULT_MEL.window_rounding == "floor" and Wav2Lip.contract.window_rounding == "floor"
    assert mel_window_start(3, 25, rounding="round") == 10
    assert mel_window_start(3, 25, MelContract(window_rounding="round")) == 10
    with pytest.raises(ValueError, match="window_rounding"):
        MelContract(window_rounding="nearest")
    with pytest.raises(TypeError):
        mel_window_start(3, 25, object())


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("fps", RATES, ids=["25", "24000_1001"])
def test_window_starts_are_exact_over_three_hours(fps: Fraction) -> None:
    frames = math.ceil(3 * 3600 * fps)
    starts = mel_window_starts(frames, fps)  # the training contract: floor
    nearest = mel_window_starts(frames, fps, rounding="round")
    samples = window_sample_starts(frames, fps)
    assert starts.dtype == np.int64 and len(starts) == len(nearest) == len(samples) == frames
    spot = list(range(0, 3000)) + list(range(frames // 2 - 500, frames // 2 + 500)) + list(range(frames - 3000, frames))
    for i in spot:
        exact = Fraction(i) * 16000 / fps
        assert starts[i] == math.floor(exact / 200), i
        assert nearest[i] == round_half_up(exact / 200), i
        assert samples[i] == round_half_up(exact), i
    for i in spot[::97] + [frames - 1]:
        assert mel_window_start(i, fps) == starts[i]
        assert mel_window_start(i, fps, rounding="round") == nearest[i]
    # Nothing drifts: 3.2 (25 fps) or 3.3367 (23.976) columns a frame, every step 3 or 4, end where it must.
    assert set(np.unique(np.diff(starts)).tolist()) == set(np.unique(np.diff(nearest)).tolist()) == {3, 4}
    assert starts[-1] == math.floor(Fraction(frames - 1) * 80 / fps)
    assert nearest[-1] == round_half_up(Fraction(frames - 1) * 80 / fps)
    # The floor column is centred at most one hop before the frame's first sample; the nearest within hop/2.
    assert 0 <= (samples - starts * 200).min() and (samples - starts * 200).max() <= 200
    assert np.abs(nearest * 200 - samples).max() <= 100


def test_floor_rounding_reproduces_the_reference_truncation() -> None:
    got = mel_window_starts(2000, 25, rounding="floor")
    assert got.tolist() == [int(i * (80.0 / 25)) for i in range(2000)]  # exact in floats at 25 fps
    ntsc = mel_window_starts(300_000, NTSC_FILM, rounding="floor")
    assert ntsc[-1] == (299_999 * 80 * 1001) // 24000


def test_offset_frames_and_huge_indices() -> None:
    whole = mel_window_starts(5000, NTSC_FILM)
    np.testing.assert_array_equal(mel_window_starts(1000, NTSC_FILM, start_frame=4000), whole[4000:])
    far = 10**15  # beyond int64-safe arithmetic: falls back to Python integers, still exact
    got = mel_window_starts(3, NTSC_FILM, start_frame=far)
    assert got.tolist() == [math.floor(Fraction(far + k) * 80 / NTSC_FILM) for k in range(3)]
    got = mel_window_starts(3, NTSC_FILM, start_frame=far, rounding="round")
    assert got.tolist() == [round_half_up(Fraction(far + k) * 80 / NTSC_FILM) for k in range(3)]


@pytest.mark.parametrize("fps", RATES, ids=["25", "24000_1001"])
def test_windows_count_contents_and_padding(fps: Fraction) -> None:
    rng = np.random.default_rng(0)
    frames = 250
    cols = int(mel_window_start(frames, fps)) - 20  # audio ends ~20 columns before the video does
    mel = rng.uniform(-3.5, 3.5, (80, cols)).astype(np.float32)
    win = mel_windows(mel, frames, fps, DEFAULT_MEL)
    assert win.shape == (frames, 1, 80, 16) and win.dtype == np.float32
    starts = mel_window_starts(frames, fps)
    for k in range(frames):
        s = int(starts[k])
        have = max(0, min(16, cols - s))
        np.testing.assert_array_equal(win[k, 0, :, :have], mel[:, s : s + have])
        assert np.all(win[k, 0, :, have:] == SILENCE)
    assert np.all(win[-1] == SILENCE)  # past the end of the audio: silence, never dropped or shifted
    # Longer audio: same windows where the audio exists, the tail is read only as far as the last window.
    longer = np.concatenate([mel, rng.uniform(-3.5, 3.5, (80, 400)).astype(np.float32)], axis=1)
    win2 = mel_windows(longer, frames, fps, DEFAULT_MEL)
    assert win2.shape == win.shape
    s_last = int(starts[-1])
    np.testing.assert_array_equal(win2[-1, 0], longer[:, s_last : s_last + 16])
    # A shot in the middle of a track: the same windows as the whole track's.
    np.testing.assert_array_equal(mel_windows(longer, 50, fps, start_frame=100), mel_windows(longer, 150, fps)[100:])
    assert mel_windows(mel, 0, fps).shape == (0, 1, 80, 16)


def test_real_clip_windows(grid_wav: np.ndarray) -> None:
    """GRID clip: 75 frames at 25 fps, audio 352 samples short of 3 s; every frame gets a window."""
    mel = melspectrogram(grid_wav)
    win = mel_windows(mel, 75, Fraction(25))
    assert win.shape == (75, 1, 80, 16)
    np.testing.assert_array_equal(win[10, 0], mel[:, 32:48])  # frame 10 -> 10 * 3.2 = column 32
    assert np.all(win[-1, 0, :, mel.shape[1] - 236 :] == SILENCE)  # frame 74 starts at column int(236.8) = 236


def test_other_contract_sizes() -> None:
    c = MelContract(sample_rate=16000, hop_length=160, mel_step=20)
    assert mel_window_start(1, 25, c) == 4  # 100 columns a second
    assert mel_windows(np.zeros((80, 10), np.float32), 3, 25, c).shape == (3, 1, 80, 20)
    with pytest.raises(ValueError, match=r"\(80, T\)"):
        mel_windows(np.zeros((40, 10), np.float32), 3, 25)
