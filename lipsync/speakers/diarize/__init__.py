"""Speaker diarization: who speaks when, as sample-exact :class:`SpeakerTurn` s.

Two backends:

``pyannote``
    A full ``pyannote.audio`` pipeline, ``Pipeline.from_pretrained(name_or_path,
    token=...)``: a hub name (default ``pyannote/speaker-diarization-community-1``,
    gated: needs a token and the network) or a local directory / ``config.yaml``
    whose weights are on disk.

``embedded`` (runs anywhere, offline)
    Built only from weights that ship *inside* installed wheels (see
    :data:`BUNDLED`):

    1. **Local segmentation.**  The pyannote/segmentation model that the whisperx
       wheel bundles (``whisperx/assets/pytorch_model.bin``; PyanNet, 5 s windows,
       up to 3 speakers per window, multi-label sigmoid scores, one frame every
       16.875 ms) slides over the 16 kHz audio with a step of
       ``segmentation_step`` x 5 s.  Scores are binarised at ``onset``; the number
       of simultaneous speakers per frame (0, 1, 2 ...) is the rounded average of
       the per-window counts (``pyannote``'s ``speaker_count``), so **overlapped
       speech keeps both speakers**.
    2. **Embeddings.**  Every window is cut into ``embedding_blocks`` equal parts
       (2 x 2.5 s).  For every (window, local speaker, block) the 40-band mel
       frames (10 ms) where that speaker is active -- alone, when there is at
       least ``min_embedding_seconds`` of such speech (``exclude_overlap``) -- are
       put end to end, loudness-normalised like resemblyzer's ``preprocess_wav``
       (-30 dBFS, increase only) and embedded with resemblyzer's GE2E
       ``VoiceEncoder`` (its wheel ships ``pretrained.pt``): mean of the
       embeddings of 1.6 s partials (hop 0.8 s), or of the whole stretch when
       shorter.  Blocks matter: the segmentation model sometimes keeps two
       similar voices as one local speaker for a whole window (AMI dev00); a
       block can still go to another cluster than its neighbour.
    3. **Clustering** (:func:`cluster_embeddings`, :func:`_cluster`).  Ward
       agglomerative clustering of the embeddings of speakers active alone for at
       least ``min_active_ratio`` of their block.  With ``num_speakers`` the tree
       is cut into exactly that many clusters (a note says why when the file has
       fewer stretches of speech than that).  Otherwise the *number of speakers*
       follows from what the segmentation model hears, not from a distance
       threshold on the GE2E embeddings -- measured on these files, the two
       speakers of the sample call are 0.14 apart (cosine distance of their mean
       embeddings) while the Ward halves of one talking head cut in pieces are
       0.18 apart: no threshold on the embeddings alone separates one voice
       from two (the old 0.14 split one voice into 2-4).  The rule:

       * **Fewest speakers** = the most voices the segmentation model hears in
         one 5 s window (local speakers with at least ``min_local_seconds`` of
         speech alone there): it separates voices within a window far better
         than GE2E does across the file.  One voice on its own gives 1.
       * **Further speakers**, top-down in the tree: a cluster is split into its
         two sub-clusters only when (a) each has at least
         ``min_speaker_seconds`` of speech of its own (distinct audio), and (b)
         the segmentation model hears them as two voices whenever it hears them
         in one window.  The votes: every real window where both sub-clusters
         speak (1 when they are different local speakers there, 0 when the
         same), and the *voice test* -- ``stitch_pairs`` x ``stitch_pairs``
         stretches of the two sub-clusters (``stitch_seconds`` each, 0.2 s of
         silence between) put side by side in one 5 s window, 1 when the model
         gives them to two local speakers.  The share of 1 votes must exceed, by
         ``split_evidence`` (0.5: a majority), the share the voice test gives for
         pairs drawn *inside* the sub-clusters (the within-file control: same
         cluster, other moments).  The model tells genders and most voices
         apart this way, but hears two clean same-gender GRID voices as one; so
         a split that fails the vote also stands when the sub-clusters' mean
         embeddings are at least ``distinct_voice_distance`` (0.25) apart --
         above every split of one voice measured here (at most 0.19 over 16
         one-voice recordings, German, French and Japanese included, 5 s crops
         and pieces with pauses) and below the different GRID voices
         (0.245-0.35) -- *unless* the model heard the two as one local speaker
         in most of the real windows where both speak: GE2E also moves with the
         channel (one voice whose second half gets noise at 5 dB SNR splits at
         0.25), the segmentation model much less.  A refused split makes the
         cluster one speaker; other branches are still divided.
       * Very short files need no special case: a 5 s clip has 1-2 windows, so
         at most a few embeddings; one voice in them is one local speaker, and
         the voice test on its halves says "same voice".  Fewer than two usable
         stretches of speech give one speaker (with a note when more were asked).

       ``min_speakers`` / ``max_speakers`` bound the count (the tree is cut at the
       bound when the rule falls outside).  Clusters smaller than
       ``min_cluster_size`` join the nearest large one.  Every embedding then goes
       to its nearest centroid, two speakers of one block never to the same one.
       What the rule decided is in ``Diarization.params["speaker_count"]``.
    4. **Turns.**  Per frame, the ``count`` most active clusters speak
       (``pyannote``'s reconstruction; ``count`` never exceeds the number of
       clusters; a cluster that is nowhere among the most active gets no turn,
       and a note says so).  Runs of frames become turns whose bounds
       lie half-way between frame centres, converted to samples of the caller's
       rate (nearest sample); per speaker, gaps shorter than ``min_duration_off``
       are filled and turns shorter than ``min_duration_on`` dropped.

Speakers are named ``SPK00``, ``SPK01`` ... in order of first speech; turns are
sorted by start and named ``turn-0001`` ...

Defaults were chosen on the pyannote sample call, the AMI "debug" excerpt and a
few derived clips (single-speaker cuts, the two concatenated, GRID clips);
``bench/bench_diarize.py`` prints the figures (one configuration, the defaults):
DER (collar 0.25, overlap scored) 0.004 on the sample (automatic count, 2
speakers; 0.012 with ``num_speakers=2``) and 0.088 on AMI dev00 (both ways);
every one-voice recording there (talking heads, their German, French and
Japanese dubs, GRID clips, 5 s crops, pieces with pauses) gives 1 speaker.

Limits: the bundled segmentation model sometimes keeps two similar voices as one
local speaker for a whole window (AMI dev00: turn changes then land on 2.5 s
block edges, about half of its DER) and does not hear dev00's overlapped speech
(the other half). dev00's two men are told apart by one window only (GE2E puts
them 0.15 apart, the voice test hears one voice): with ``segmentation_step``
0.14, 0.18 or 0.26 instead of 0.2 that window is gone and the automatic count
says 1 (DER about 0.3; with ``num_speakers=2``, 0.13-0.15), while every
one-voice recording above stays 1 speaker at each of these steps. Two similar
voices that never share a window and whose embeddings are less than 0.25 apart,
or two that it hears as one voice when they speak back to back, are one speaker
(four GRID speakers with 4 s of speech each come out as 3, three GRID women back
to back as 1); an abrupt change of channel in one voice (band-limited to
300-3400 Hz half-way) can be heard as a second voice: pass ``num_speakers`` (or
bounds) when the cast is known, or use the ``pyannote`` backend where its
weights are available.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from .clustering import cluster_embeddings
from .common import (
    BUNDLED,
    DEFAULT_PYANNOTE_PIPELINE,
    MODEL_SAMPLE_RATE,
    Backend,
    BundledWeights,
    Diarization,
    DiarizationError,
    DiarizationParams,
    Progress,
)
from .embedded import _run_embedded, load_segmentation_model, load_voice_encoder
from .pyannote_backend import _load_pyannote_pipeline, _run_pyannote

log = logging.getLogger(__name__)

__all__ = [
    "BUNDLED",
    "DEFAULT_PYANNOTE_PIPELINE",
    "MODEL_SAMPLE_RATE",
    "Backend",
    "BundledWeights",
    "Diarization",
    "DiarizationError",
    "DiarizationParams",
    "Progress",
    "cluster_embeddings",
    "diarize",
    "load_segmentation_model",
    "load_voice_encoder",
]


def diarize(
    audio_path_or_array: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    backend: Backend = "auto",
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    pyannote_pipeline: str | os.PathLike[str] | None = None,
    token: str | None = None,
    progress: Progress | None = None,
    params: DiarizationParams | None = None,
    uri: str | None = None,
) -> Diarization:
    """Diarize one recording.

    ``audio_path_or_array``: a media file (any audio or video ffmpeg reads; its
    first audio stream, downmixed, decoded at 16 kHz), or a float array of
    samples ``(n,)`` or ``(n, channels)`` (downmixed) at ``sample_rate``.

    ``sample_rate``: the rate of the array (required for an array); for a file,
    the rate the turns are expressed in (default 16000: the file is analysed at
    16 kHz whatever its rate, and the bounds converted to this rate).

    ``backend``: ``"embedded"`` (offline, weights inside installed wheels),
    ``"pyannote"`` (``pyannote_pipeline``: hub name + ``token``, or a local
    path; errors if it cannot load) or ``"auto"``: pyannote when a pipeline is
    named, a token is given (or ``HF_TOKEN`` is set), and it loads; else the
    embedded backend, with a note saying why.

    ``num_speakers`` fixes the number of speakers; ``min_speakers`` /
    ``max_speakers`` bound it.  ``progress(done, total)`` is called as windows
    and embeddings are processed.  A recording with no speech gives no turns.
    """
    if backend not in ("auto", "pyannote", "embedded"):
        raise ValueError(f"backend must be 'auto', 'pyannote' or 'embedded', got {backend!r}")
    _check_counts(num_speakers, min_speakers, max_speakers)
    waveform, out_rate, uri, num_samples = _load_input(audio_path_or_array, sample_rate, uri)

    notes: list[str] = []
    if backend in ("auto", "pyannote"):
        token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_TOKEN")
        if backend == "auto" and pyannote_pipeline is None and not token:
            notes.append(
                "pyannote backend not tried: no pipeline given (pyannote_pipeline = local path, or hub name with a "
                "token / HF_TOKEN); used the embedded backend"
            )
        else:
            name = str(pyannote_pipeline or DEFAULT_PYANNOTE_PIPELINE)
            try:
                pipeline = _load_pyannote_pipeline(name, token)
            except DiarizationError as exc:
                if backend == "pyannote":
                    raise
                notes.append(f"pyannote backend unavailable ({exc}); used the embedded backend")
                log.warning(notes[-1])
            else:
                turns = _run_pyannote(pipeline, waveform, out_rate, num_samples, num_speakers, min_speakers, max_speakers, progress)
                return Diarization(uri, out_rate, turns, "pyannote", tuple(notes), num_samples, {"pipeline": name})

    params = params or DiarizationParams()
    turns, more_notes, count_info = _run_embedded(waveform, out_rate, num_samples, params, num_speakers, min_speakers, max_speakers, progress)
    info = {"embedded": params.to_dict(), "weights": sorted(BUNDLED), "speaker_count": count_info}
    return Diarization(uri, out_rate, turns, "embedded", tuple(notes + more_notes), num_samples, info)


def _check_counts(num: int | None, lo: int | None, hi: int | None) -> None:
    for name, value in (("num_speakers", num), ("min_speakers", lo), ("max_speakers", hi)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num is None and lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_speakers ({lo}) is larger than max_speakers ({hi})")


def _load_input(
    source: str | os.PathLike[str] | np.ndarray, sample_rate: int | None, uri: str | None
) -> tuple[np.ndarray, int, str, int]:
    """(16 kHz mono float32 waveform, output rate, uri, length at output rate)."""
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required when diarizing an array of samples")
        data = np.asarray(source, dtype=np.float32)
        if data.ndim == 2:
            data = data.mean(axis=1, dtype=np.float32)
        elif data.ndim != 1:
            raise ValueError(f"audio array must be (samples,) or (samples, channels), got shape {data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError("audio array holds NaN or infinite samples")
        rate = int(sample_rate)
        wave = _resample(data, rate, MODEL_SAMPLE_RATE)
        return wave, rate, uri or "audio", len(data)

    from lipsync.media.audio import load_audio

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rate = int(sample_rate or MODEL_SAMPLE_RATE)
    wave = np.ascontiguousarray(load_audio(path, MODEL_SAMPLE_RATE, mono=True), dtype=np.float32)
    num_samples = round(len(wave) * rate / MODEL_SAMPLE_RATE)
    return wave, rate, uri or path.stem, num_samples


def _resample(data: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return np.ascontiguousarray(data, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(src, dst)
    return resample_poly(data, dst // g, src // g).astype(np.float32)
