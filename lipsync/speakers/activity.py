"""Where a single-voice track speaks: an energy voice-activity detector on 16 kHz audio.

For a character stem (one voice, silence elsewhere) this is all diarization
needs; mixed tracks go through :mod:`lipsync.speakers.diarize` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_closing, binary_opening


@dataclass(frozen=True)
class VadParams:
    """20 ms frames; speech where the frame's RMS is within ``range_db`` of the track's
    loud level (95th percentile), at least ``above_noise_db`` over its noise floor
    (10th percentile of the frames above digital silence, so that the silence between
    a stem's lines does not count, and a location recording's room noise does) and above ``floor_db`` dBFS; bursts shorter than ``min_speech_s`` (clicks,
    breaths) are dropped, then gaps shorter than ``bridge_s`` bridged."""

    frame_s: float = 0.02
    range_db: float = 30.0
    floor_db: float = -50.0
    above_noise_db: float = 12.0
    bridge_s: float = 0.3
    min_speech_s: float = 0.1


def speech_spans(audio: np.ndarray, sample_rate: int, params: VadParams = VadParams()) -> list[tuple[int, int]]:
    """Half-open sample ranges where ``audio`` (mono) holds speech."""
    hop = max(1, int(round(params.frame_s * sample_rate)))
    n = len(audio) // hop
    if n == 0:
        return []
    frames = np.asarray(audio[: n * hop], dtype=np.float64).reshape(n, hop)
    db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-10)
    heard = db[db > -100.0]  # digital silence (a stem between lines) is not the noise floor
    if heard.size == 0:
        return []
    loud, noise = np.percentile(heard, 95), np.percentile(heard, 10)
    active = db > max(params.floor_db, loud - params.range_db, noise + params.above_noise_db)
    # Clicks and breaths shorter than min_speech_s go first, so that bridging cannot glue them to a line.
    shortest = max(1, int(round(params.min_speech_s / params.frame_s)))
    active = binary_opening(np.pad(active, shortest), structure=np.ones(shortest, bool))[shortest:-shortest]
    bridge = max(1, int(round(params.bridge_s / params.frame_s)))
    active = binary_closing(np.pad(active, bridge), structure=np.ones(bridge, bool))[bridge:-bridge]
    padded = np.concatenate([[False], active, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a) * hop, int(b) * hop) for a, b in zip(edges[::2], edges[1::2])]
