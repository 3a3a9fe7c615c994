"""Audio features for the models (no torch here): all the spectrogram code of the project.

:mod:`lipsync.audio.mel` -- Wav2Lip's mel spectrogram and the exact placement of
one mel window per video frame (Wav2Lip, the lip-sync expert, training).

:mod:`lipsync.audio.mfcc` -- ``python_speech_features``' MFCC, with the numbers of
a model's contract (Light-ASD, SyncNet).

:mod:`lipsync.audio.voice_mel` -- the voice encoder's power mel frames (resemblyzer's
GE2E, read by the speaker diarization); a different feature from Wav2Lip's mel.
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
from .mfcc import MfccParams, mfcc_params  # the function is lipsync.audio.mfcc.mfcc (not shadowing its module)
from .voice_mel import VoiceMelParams, voice_mel_frames

__all__ = [
    "DEFAULT_MEL",
    "MelContract",
    "MfccParams",
    "VoiceMelParams",
    "mel_window_start",
    "mel_window_starts",
    "mel_windows",
    "melspectrogram",
    "mfcc_params",
    "voice_mel_frames",
    "window_sample_starts",
]
