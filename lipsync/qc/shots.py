"""QC of one shot: measure every re-voiced face of the delivered film, and the original as the reference.

For each face track that was re-rendered, over the track's frames:

* SyncNet (when its weights are given): LSE of the **output** picture against the
  **voice that drove it**, and LSE of the **original** picture against the
  **original audio** (the reference the verdict is relative to);
* Light-ASD (when its weights are given): the weight-free estimate of the offset
  of the output against its voice (:func:`lipsync.qc.asd_sync.estimate_offset`:
  Light-ASD's sync curve and the mouth-envelope fit, combined), a second opinion
  that needs no SyncNet weights, and on its own never enough for *pass*
  (:func:`lipsync.qc.report.verdict`).

Only the track's frames are decoded, and only the track's stretch of audio is
read, so the cost and the memory follow the shot, not the film.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack, Shot
from dubcore.timebase import FrameRange, frame_to_sample

from .metrics import FaceInput, added_metrics
from .report import MEASURED, RANK, QCThresholds, ShotQC, TrackQC, shot_verdict, thumbnail, verdict

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class QCModels:
    syncnet: Any = None  # lipsync.models.syncnet.SyncNet
    asd: Any = None  # lipsync.models.light_asd.LightASD

    def signals(self) -> dict[str, str]:
        return {"syncnet": "yes" if self.syncnet is not None else "no (weights absent: no track can pass, at best unverified)",
                "light_asd": "yes" if self.asd is not None else "no"}


AudioSource = Callable[[FrameRange], np.ndarray]


def context_frames(fps: Fraction, max_offset: int = 15) -> int:
    """Source frames of audio read on each side of a track: ``max_offset`` frames at 25 fps and one more."""
    return int(np.ceil(max_offset * float(fps) / 25.0)) + 1


def wav_source(path: str | os.PathLike[str], fps: Fraction, tail_frames: int = 2) -> AudioSource:
    """Audio of a 16 kHz WAV whose sample 0 is frame 0: ``source(frames)`` gives mono float32
    from the first sample of ``frames`` to a little past its end (zeros past the file's end)."""
    import soundfile as sf

    info = sf.info(str(path))
    if info.samplerate != SAMPLE_RATE:
        raise ValueError(f"{path}: QC needs {SAMPLE_RATE} Hz audio, got {info.samplerate} Hz")

    def read(frames: FrameRange) -> np.ndarray:
        a = frame_to_sample(frames.start, fps, SAMPLE_RATE)
        b = frame_to_sample(frames.end + tail_frames, fps, SAMPLE_RATE)
        data, _ = sf.read(str(path), start=min(a, info.frames), stop=min(b, info.frames), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        return np.pad(mono, (0, max(0, (b - a) - len(mono))))

    return read


def array_source(audio: np.ndarray, fps: Fraction, tail_frames: int = 2) -> AudioSource:
    """Same as :func:`wav_source` for a 16 kHz array (e.g. a memory map) starting at frame 0."""

    def read(frames: FrameRange) -> np.ndarray:
        a = frame_to_sample(frames.start, fps, SAMPLE_RATE)
        b = frame_to_sample(frames.end + tail_frames, fps, SAMPLE_RATE)
        part = np.asarray(audio[min(a, len(audio)) : min(b, len(audio))], dtype=np.float32)
        return np.pad(part, (0, max(0, (b - a) - len(part))))

    return read


def _frame(path: str | os.PathLike[str], index: int, info=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    from lipsync.media.frames import FrameReader

    with FrameReader(path, frames=FrameRange(index, index + 1), info=info) as reader:
        for f in reader:
            return f.copy()
    raise ValueError(f"{path}: no frame {index}")


def measure_track(
    video: str | os.PathLike[str],
    track: FaceTrack,
    audio: np.ndarray,
    models: QCModels,
    fps: Fraction,
    *,
    info=None,  # type: ignore[no-untyped-def]
    lse: bool = True,
    asd: bool = True,
    lead: int = 0,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(lse, asd)`` of ``track`` in ``video`` against ``audio`` (16 kHz, starting ``lead`` frames before the
    track's first frame: the context the shifted audio reads at the track's start)."""
    lse_out = asd_out = None
    if lse and models.syncnet is not None and track.frames.duration >= 5:
        from lipsync.speakers.asd import tick_frames

        from .lse import lse_window_count, score_lse, syncnet_crops

        start = frame_to_sample(lead, fps, SAMPLE_RATE)
        ticks = len(tick_frames(track.frames.duration, fps, models.syncnet.contract.fps))
        if lse_window_count(ticks, len(audio) - start, contract=models.syncnet.contract) >= 1:  # syncnet_python's count
            crops = syncnet_crops(video, track, info=info)
            lse_out = score_lse(crops, audio, start, models.syncnet, fps=fps).to_dict()
    if asd and models.asd is not None:
        from lipsync.speakers.asd import crop_tracks

        from .asd_sync import estimate_offset

        crops = crop_tracks(video, [track], fps=fps, info=info, contract=models.asd.contract)[track.id]
        asd_out = estimate_offset(crops, audio, track.frames.start - lead, models.asd).to_dict()
    return lse_out, asd_out


def qc_shot(
    shot: Shot,
    render: Mapping[str, Any],
    tracks: Sequence[FaceTrack],
    voices: Mapping[str, str | None],
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    original_audio: AudioSource | None,
    voice_audio: Mapping[str, AudioSource],
    models: QCModels,
    fps: Fraction,
    *,
    thresholds: QCThresholds = QCThresholds(),
    thumbnails: bool = True,
    source_info=None,  # type: ignore[no-untyped-def]
    output_info=None,  # type: ignore[no-untyped-def]
    output_offset: int = 0,
    reference: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> ShotQC:
    """QC of ``shot`` (see the module docstring).

    ``render`` is the lip-sync stage's summary of the shot (``status``, ``reason``,
    ``tracks``: ``[{id, synthesized, untouched}]``); ``voices`` maps each rendered
    track to its voice name, ``voice_audio`` each voice name to its audio."""
    by_id = {t.id: t for t in tracks}
    status = str(render.get("status", "unchanged"))
    results: list[TrackQC] = []
    if status in MEASURED:
        for entry in render.get("tracks", []):
            track = by_id.get(entry["id"])
            if track is None:
                continue
            voice = voices.get(track.id)
            audio_of = voice_audio.get(voice or "") or voice_audio.get("")
            lse_o = asd_o = ref = None
            added: dict[str, Any] = {}
            if audio_of is not None:
                lead = min(track.frames.start, context_frames(fps))
                heard = audio_of(FrameRange(track.frames.start - lead, track.frames.end + lead))
                lse_o, asd_o = measure_track(output, track.shifted(-output_offset), heard, models, fps, info=output_info, lead=lead)
                face = FaceInput(str(output), track.shifted(-output_offset), heard, lead, fps, output_info)
                for metric in added_metrics():  # registered metrics (lipsync.qc.metrics)
                    result = metric.measure(face) if metric.measure is not None else None
                    if result is not None:
                        added[metric.name] = dict(result)
            if reference is not None:
                ref = reference.get(track.id)
            elif original_audio is not None and models.syncnet is not None:
                ref, _ = measure_track(source, track, original_audio(track.frames), models, fps, info=source_info, asd=False)
            v, reasons = verdict(lse_o, ref, asd_o, thresholds)
            for metric in added_metrics():
                if metric.judge is not None and metric.name in added:
                    v2, why = metric.judge(added[metric.name])
                    if RANK[v2] < RANK[v]:
                        v = v2
                    reasons = (*reasons, *why)
            results.append(TrackQC(track.id, voice, (track.frames.start, track.frames.end),
                                   int(entry.get("synthesized", 0)), dict(entry.get("untouched", {})), lse_o, ref, asd_o, v, reasons,
                                   metrics=added))
    thumbs: dict[str, str] = {}
    if thumbnails:
        mid = (shot.frames.start + shot.frames.end - 1) // 2
        thumbs["before"] = thumbnail(_frame(source, mid, source_info))
        thumbs["after"] = thumbnail(_frame(output, mid - output_offset, output_info))
    return ShotQC(shot.id, (shot.frames.start, shot.frames.end), str(shot.start_timecode), str(shot.end_timecode), status,
                  render.get("reason"), tuple(results), shot_verdict(status, results), thumbs)


def take_score(shot: ShotQC) -> tuple[int, float]:
    """How good a take is: its verdict first (fail < review < unverified < pass), then the mean sync quality of
    its faces (LSE-C when SyncNet measured it, else the weight-free estimate's confidence, its mouth R^2), minus 1
    per frame of offset."""
    values = []
    for t in shot.tracks:
        if t.lse:
            values.append(float(t.lse["lse_c"]) - abs(int(t.lse["offset"])))
        elif t.asd:
            values.append(float(t.asd["confidence"]) - abs(int(t.asd["offset"])))
    return RANK[shot.verdict], (sum(values) / len(values) if values else float("-inf"))


def qc_audio(plan: Any, fps: Fraction, dialogue: str | os.PathLike[str] | None,
             original: np.ndarray | None) -> tuple[dict[str, str], dict[str, AudioSource], AudioSource | None]:
    """What QC listens to: each re-voiced track's voice (by the speaker ``plan``; without one, the whole
    ``dialogue`` under the voice ``""``), each voice's 16 kHz audio, and the original's (``original``: the
    16 kHz soundtrack, ``None`` when the film has none)."""
    if plan is not None:
        voices = {d.track_id: d.voice for d in plan.drives}
        voice_audio = {v.name: wav_source(v.audio, fps) for v in plan.voices}
    else:
        if dialogue is None:
            raise ValueError("qc_audio needs the speaker plan or the dub dialogue")
        voices, voice_audio = {}, {"": wav_source(dialogue, fps)}
    return voices, voice_audio, None if original is None else array_source(original, fps)
