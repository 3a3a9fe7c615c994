"""Audio features for the lip-sync models (no torch here).

:mod:`lipsync.audio.mel` -- Wav2Lip's mel spectrogram and the exact placement of
one mel window per video frame.
"""

from .mel import (
    DEFAULT_MEL,
    MelContract,
    mel_window_start,
    mel_window_starts,
    mel_windows,
    melspectrogram,
    window_sample_starts,
)

__all__ = [
    "DEFAULT_MEL",
    "MelContract",
    "mel_window_start",
    "mel_window_starts",
    "mel_windows",
    "melspectrogram",
    "window_sample_starts",
]
