"""The ``pyannote`` backend: a full ``pyannote.audio`` pipeline (hub name + token, or a local path)."""

from __future__ import annotations

import os
from pathlib import Path

from dubcore.records import SpeakerTurn

from .common import MODEL_SAMPLE_RATE, DiarizationError, _finalise, _quiet


def _load_pyannote_pipeline(name: str, token: str | None):  # type: ignore[no-untyped-def]
    """``Pipeline.from_pretrained``; any failure becomes a :class:`DiarizationError` that says why."""
    try:
        from pyannote.audio import Pipeline
    except Exception as exc:  # pragma: no cover - pyannote.audio is a dependency
        raise DiarizationError(f"pyannote.audio cannot be imported: {exc}") from exc
    local = Path(name).expanduser()
    if not local.exists() and (name.startswith((".", "/", "~")) or name.endswith((".yaml", ".yml"))):
        raise DiarizationError(f"pyannote pipeline {name}: no such local path")
    if not local.exists() and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") and not token:
        raise DiarizationError(f"pyannote pipeline {name!r}: HF_HUB_OFFLINE is set and the pipeline is not local")
    try:
        with _quiet():
            pipeline = Pipeline.from_pretrained(str(local) if local.exists() else name, token=token)
    except Exception as exc:
        raise DiarizationError(f"pyannote pipeline {name!r} could not be loaded: {type(exc).__name__}: {_first_line(exc)}") from exc
    if pipeline is None:
        raise DiarizationError(
            f"pyannote pipeline {name!r} could not be loaded (gated or not downloadable: accept its conditions on the "
            "hub and give a token, or give a local path)"
        )
    return pipeline


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _run_pyannote(
    pipeline, waveform, out_rate, num_samples, num_speakers, min_speakers, max_speakers, progress
) -> tuple[SpeakerTurn, ...]:  # type: ignore[no-untyped-def]
    import torch

    def hook(step_name, step_artefact, file=None, total=None, completed=None):  # type: ignore[no-untyped-def]
        if progress is not None and total:
            progress(int(completed or 0), int(total))

    file = {"waveform": torch.from_numpy(waveform)[None], "sample_rate": MODEL_SAMPLE_RATE, "uri": "file"}
    kwargs = {k: v for k, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)) if v}
    with _quiet():
        output = pipeline(file, hook=hook, **kwargs)
    annotation = getattr(output, "speaker_diarization", output)
    segments = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        s0 = min(num_samples, max(0, round(segment.start * out_rate)))
        s1 = min(num_samples, max(0, round(segment.end * out_rate)))
        if s1 > s0:
            segments.append((str(label), s0, s1))
    return _finalise(segments, out_rate)
