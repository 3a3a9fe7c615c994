"""The ``embedded`` backend (offline): local segmentation, GE2E embeddings, turns.

Steps 1, 2 and 4 of the :mod:`lipsync.speakers.diarize` docstring; step 3 (how many speakers,
and which is which) is in :mod:`.clustering`; the voice encoder's mel features are
:mod:`lipsync.audio.voice_mel`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from typing import Any

import numpy as np

from dubcore.records import SpeakerTurn

from .clustering import _cluster, _local_voices, _voice_test
from .common import (
    BUNDLED,
    MODEL_SAMPLE_RATE,
    DiarizationError,
    DiarizationParams,
    Progress,
    _finalise,
    _quiet,
)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def load_segmentation_model(device: str = "cpu"):  # type: ignore[no-untyped-def]
    """The bundled pyannote segmentation model (eval mode)."""
    path = BUNDLED["pyannote_segmentation_whisperx"].verified_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyannote.audio import Model  # imported first: importing Lightning resets its log levels
    with _quiet():
        model = Model.from_pretrained(str(path))
    if model is None:  # pragma: no cover
        raise DiarizationError(f"{path}: pyannote could not load the segmentation model")
    spec = model.specifications
    if getattr(spec, "powerset", False) or float(spec.duration) <= 0:
        raise DiarizationError(f"{path}: unexpected segmentation model (powerset={spec.powerset}, duration={spec.duration})")
    model.eval()
    return model.to(device)


@functools.lru_cache(maxsize=4)
def load_voice_encoder(device: str = "cpu"):  # type: ignore[no-untyped-def]
    """resemblyzer's bundled GE2E voice encoder (eval mode)."""
    path = BUNDLED["resemblyzer_ge2e"].verified_path()
    with _quiet():
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise DiarizationError(f"resemblyzer cannot be imported ({exc}); install resemblyzer==0.1.4") from exc
    with _quiet():
        encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=path)
    encoder.eval()
    return encoder


def _run_embedded(
    waveform: np.ndarray,
    out_rate: int,
    num_samples: int,
    params: DiarizationParams,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    progress: Progress | None,
) -> tuple[tuple[SpeakerTurn, ...], list[str], dict[str, Any]]:
    notes: list[str] = []
    if len(waveform) == 0 or not np.any(waveform):
        return (), ["no audio signal (empty or digital silence): no turns"], {}
    started = time.perf_counter()
    model = load_segmentation_model(params.device)
    seg = _segment(model, waveform, params, progress)
    count, binarized = _count_speakers(model, seg, params)
    if float(np.nanmax(count.data, initial=0.0)) == 0.0:
        return (), ["no speech detected: no turns"], {}

    encoder = load_voice_encoder(params.device)
    seg_b, bin_b = _split_blocks(seg, binarized, params.embedding_blocks)
    embeddings, speech = _embed(encoder, waveform, bin_b, model, params, progress)
    turns, more_notes, info = _turns_from_embeddings(
        model, waveform, out_rate, num_samples, params, num_speakers, min_speakers, max_speakers,
        binarized, count, seg_b, bin_b, embeddings, speech,
    )
    notes += more_notes
    log.info("diarized %.1f s of audio in %.1f s: %d turns, %d speakers", len(waveform) / MODEL_SAMPLE_RATE,
             time.perf_counter() - started, len(turns), len({t.speaker for t in turns}))
    return turns, notes, info


def _turns_from_embeddings(
    model, waveform, out_rate, num_samples, params, num_speakers, min_speakers, max_speakers,
    binarized, count, seg_b, bin_b, embeddings, speech,
):  # type: ignore[no-untyped-def]
    """Count and cluster the voices, then rebuild the turns (steps 3 and 4 of the module docstring)."""
    differ = _voice_test(model, waveform, params)
    hard_clusters, notes, info = _cluster(
        embeddings, bin_b, speech, params, num_speakers, min_speakers, max_speakers,
        differ=differ, local_voices=_local_voices(binarized, params),
    )
    # Never more simultaneous speakers than speakers found (pyannote would pad with a phantom one).
    found = max(1, int(hard_clusters.max()) + 1)
    count.data = np.minimum(count.data, found).astype(np.int8)
    discrete = _reconstruct(seg_b, hard_clusters, count)
    segments = _frames_to_segments(discrete, out_rate, num_samples)
    segments = _smooth(segments, out_rate, params)
    turns = _finalise(segments, out_rate)
    speakers = len({t.speaker for t in turns})
    if speakers < found:
        wanted = num_speakers or min_speakers
        lost = (
            f"{found} voices were told apart, but {found - speakers} of them {'is' if found - speakers == 1 else 'are'} "
            f"never among the most active voices at any moment, so the turns have {speakers} speaker(s)"
        )
        notes.append(f"asked for {'' if num_speakers else 'at least '}{wanted} speakers: {lost}" if wanted and speakers < wanted else lost)
    info["speakers"] = speakers
    info["overlap_seconds"] = round(float(np.sum(count.data >= 2)) * count.sliding_window.step, 3)
    return turns, notes, info


def _segment(model, waveform: np.ndarray, params: DiarizationParams, progress: Progress | None):  # type: ignore[no-untyped-def]
    """Raw segmentation scores: SlidingWindowFeature (chunks, frames, local speakers)."""
    import torch
    from pyannote.audio import Inference

    duration = float(model.specifications.duration)
    inference = Inference(
        model,
        duration=duration,
        step=params.segmentation_step * duration,
        skip_aggregation=True,
        batch_size=params.batch_size,
        device=torch.device(params.device),
    )

    def hook(completed=None, total=None, **_):  # type: ignore[no-untyped-def]
        if progress is not None and total:
            progress(min(int(completed or 0), int(total)), int(total) * 2)

    with _quiet(), torch.inference_mode():
        return inference({"waveform": torch.from_numpy(waveform)[None], "sample_rate": MODEL_SAMPLE_RATE}, hook=hook)


def _count_speakers(model, seg, params: DiarizationParams):  # type: ignore[no-untyped-def]
    from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
    from pyannote.audio.utils.signal import binarize

    binarized = binarize(seg, onset=params.onset, initial_state=False)
    count = SpeakerDiarizationMixin.speaker_count(binarized, model.receptive_field, warm_up=(0.0, 0.0))
    return count, binarized


def _embed(encoder, waveform, binarized, model, params: DiarizationParams, progress: Progress | None):  # type: ignore[no-untyped-def]
    """``(embeddings, speech)``: embeddings (chunks, local speakers, 256), NaN where a speaker has too
    little speech; ``speech[(chunk, speaker)]`` = the 10 ms mel frames (indices) each one was computed on."""
    import torch
    from resemblyzer import hparams as rz

    from lipsync.audio.voice_mel import VoiceMelParams, voice_mel_frames

    mel_params = VoiceMelParams(MODEL_SAMPLE_RATE, rz.mel_window_length, rz.mel_window_step, rz.mel_n_channels)
    hop = mel_params.hop  # 160 samples = 10 ms
    mel, power = voice_mel_frames(waveform, mel_params)
    num_mel = len(mel)
    data = binarized.data  # (chunks, frames, speakers) 0/1
    num_chunks, num_frames, num_local = data.shape
    chunks = binarized.sliding_window
    frames = model.receptive_field
    min_mel = max(1, int(round(params.min_embedding_seconds * MODEL_SAMPLE_RATE / hop)))

    # Which segmentation frame each 10 ms mel frame of a window falls in (same for every window).
    window_mel = int(round(chunks.duration * MODEL_SAMPLE_RATE / hop))
    centres = np.arange(window_mel) * hop / MODEL_SAMPLE_RATE
    frame_of = np.clip(np.rint((centres - frames.start - frames.duration / 2) / frames.step), 0, num_frames - 1).astype(int)

    jobs: list[tuple[int, int, np.ndarray]] = []  # (chunk, speaker, mel frame indices)
    for c in range(num_chunks):
        first = int(round(chunks[c].start * MODEL_SAMPLE_RATE / hop))
        idx = first + np.arange(window_mel)
        valid = idx < num_mel
        masks = data[c][frame_of]  # (window_mel, speakers)
        clean = masks.sum(axis=1) == 1
        for s in range(num_local):
            active = masks[:, s] > 0
            if params.exclude_overlap and np.count_nonzero(active & clean & valid) >= min_mel:
                active = active & clean
            active &= valid
            if np.count_nonzero(active) >= min_mel:
                jobs.append((c, s, idx[active]))

    embeddings = np.full((num_chunks, num_local, rz.model_embedding_size), np.nan, dtype=np.float32)
    # Loudness normalisation as resemblyzer.preprocess_wav: to -30 dBFS, never quieter.
    partials: list[np.ndarray] = []
    owner: list[int] = []
    for j, (_, _, sel) in enumerate(jobs):
        dbfs = 10 * np.log10(max(float(power[sel].mean()), 1e-12))
        gain = 10 ** (max(0.0, rz.audio_norm_target_dBFS - dbfs) / 10)  # power domain
        feats = mel[sel] * np.float32(gain)
        n = len(feats)
        size = rz.partials_n_frames
        if n <= size:
            starts = [0]
        else:
            step = size // 2
            starts = list(range(0, n - size + 1, step))
            if starts[-1] != n - size:
                starts.append(n - size)
        for st in starts:
            partials.append(feats[st : st + size])
            owner.append(j)

    total = len(partials)
    done = 0
    out = np.zeros((total, rz.model_embedding_size), dtype=np.float32)
    order = sorted(range(total), key=lambda i: -len(partials[i]))  # group equal lengths (most are full partials)
    with torch.inference_mode():
        i = 0
        while i < total:
            length = len(partials[order[i]])
            batch_ids = []
            while i < total and len(batch_ids) < params.embedding_batch_size and len(partials[order[i]]) == length:
                batch_ids.append(order[i])
                i += 1
            batch = torch.from_numpy(np.stack([partials[k] for k in batch_ids])).to(params.device)
            out[batch_ids] = encoder(batch).cpu().numpy()
            done += len(batch_ids)
            if progress is not None:
                progress(num_chunks + (num_chunks * done) // total, 2 * num_chunks)
    owner_arr = np.asarray(owner)
    for j, (c, s, _) in enumerate(jobs):
        vecs = out[owner_arr == j]
        mean = vecs.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            embeddings[c, s] = mean / norm
    if progress is not None:
        progress(2 * num_chunks, 2 * num_chunks)
    return embeddings, {(c, s): sel for c, s, sel in jobs}


def _split_blocks(seg, binarized, blocks: int):  # type: ignore[no-untyped-def]
    """(chunks, frames, S) -> (chunks, frames, S * blocks): column ``s * blocks + b`` is local
    speaker ``s`` restricted to the ``b``-th equal part of the window (zero elsewhere)."""
    from pyannote.core import SlidingWindowFeature

    if blocks <= 1:
        return seg, binarized
    num_chunks, num_frames, num_local = seg.data.shape
    edges = np.linspace(0, num_frames, blocks + 1).round().astype(int)
    out_seg = np.zeros((num_chunks, num_frames, num_local * blocks), dtype=np.float32)
    out_bin = np.zeros_like(out_seg)
    for s in range(num_local):
        for b in range(blocks):
            lo, hi = edges[b], edges[b + 1]
            out_seg[:, lo:hi, s * blocks + b] = np.nan_to_num(seg.data[:, lo:hi, s])
            out_bin[:, lo:hi, s * blocks + b] = binarized.data[:, lo:hi, s]
    return SlidingWindowFeature(out_seg, seg.sliding_window), SlidingWindowFeature(out_bin, binarized.sliding_window)


def _reconstruct(seg, hard_clusters: np.ndarray, count):  # type: ignore[no-untyped-def]
    """pyannote's reconstruction: per frame, the ``count`` most active clusters."""
    from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
    from pyannote.core import SlidingWindowFeature

    num_chunks, num_frames, _ = seg.data.shape
    num_clusters = max(1, int(hard_clusters.max()) + 1)
    clustered = np.full((num_chunks, num_frames, num_clusters), np.nan)
    for c, (cluster, (_, scores)) in enumerate(zip(hard_clusters, seg)):
        for k in np.unique(cluster):
            if k < 0:
                continue
            clustered[c, :, k] = np.max(scores[:, cluster == k], axis=1)
    return SpeakerDiarizationMixin.to_diarization(SlidingWindowFeature(clustered, seg.sliding_window), count)


def _frames_to_segments(discrete, out_rate: int, num_samples: int) -> list[tuple[str, int, int]]:
    """Runs of active frames -> (cluster, start sample, end sample) at ``out_rate``; bounds half-way between frame centres."""
    data = np.asarray(discrete.data) > 0.5
    window = discrete.sliding_window
    segments: list[tuple[str, int, int]] = []
    num_frames = data.shape[0]
    for k in range(data.shape[1]):
        col = np.concatenate([[False], data[:, k], [False]])
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))
        for a, b in zip(edges[::2], edges[1::2]):
            t0 = window[a].middle - window.step / 2
            t1 = window[b - 1].middle + window.step / 2
            s0 = min(num_samples, max(0, int(math.floor(t0 * out_rate + 0.5))))
            s1 = min(num_samples, max(0, int(math.floor(t1 * out_rate + 0.5))))
            if b >= num_frames:
                s1 = max(s1, s0)
            if s1 > s0:
                segments.append((str(k), s0, s1))
    return segments


def _smooth(segments: list[tuple[str, int, int]], rate: int, params: DiarizationParams) -> list[tuple[str, int, int]]:
    """Per speaker: fill gaps shorter than ``min_duration_off``, then drop turns shorter than ``min_duration_on``."""
    gap = int(round(params.min_duration_off * rate))
    shortest = int(round(params.min_duration_on * rate))
    out: list[tuple[str, int, int]] = []
    for speaker in sorted({s for s, _, _ in segments}):
        runs = sorted((a, b) for s, a, b in segments if s == speaker)
        merged: list[list[int]] = []
        for a, b in runs:
            if merged and a - merged[-1][1] < gap:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [(speaker, a, b) for a, b in merged if b - a >= shortest]
    return out
