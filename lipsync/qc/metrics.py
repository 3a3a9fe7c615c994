"""QC metrics, registered: each says which columns it adds to the report and, for added metrics, how
it measures a re-voiced face and how its result weighs on the verdict.

The built-in entries describe what :func:`lipsync.qc.shots.qc_shot` always measures
-- SyncNet's LSE against the voice (and the original's, for reference), the
weight-free sync estimate (Light-ASD and mouth motion), the casting check -- so the
report's columns come from here.  An added metric (:func:`register_metric`) is
measured on every re-voiced face of every shot by ``qc_shot``; its result lands in
``TrackQC.metrics[name]`` (report.json), its columns in report.csv and the table,
and a line in the HTML report, without editing the report code:

>>> register_metric(QCMetric("mouth_energy", ("mouth_energy",), measure=my_measure))   # doctest: +SKIP

``measure(face)`` gets a :class:`FaceInput` (the delivered video, the track, the
16 kHz audio it was driven with, the rate and probe) and returns a JSON-ready dict
or ``None`` (not measurable); ``judge(result)`` (optional) returns ``(verdict,
reasons)`` -- a verdict can only make the face's worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping

import numpy as np

Cells = Callable[[Any], Mapping[str, Any]]  # TrackQC (or None for a row without a track) -> column values


@dataclass(frozen=True)
class FaceInput:
    """What an added metric measures: a re-voiced face in the delivered film and the audio that drives it.

    ``audio`` is mono float32 at 16 kHz starting ``lead`` frames before the track's first frame."""

    video: str
    track: Any  # dubcore.records.FaceTrack, frames of ``video``
    audio: np.ndarray
    lead: int
    fps: Fraction
    info: Any = None  # the probe of ``video``


@dataclass(frozen=True)
class QCMetric:
    """One metric: its ``columns`` (CSV / table), and for an added metric ``measure`` and ``judge``.

    ``group`` places the columns: "measures" before the verdict and reason, "checks" after them."""

    name: str
    columns: tuple[str, ...]
    measure: Callable[[FaceInput], Mapping[str, Any] | None] | None = None
    judge: Callable[[Mapping[str, Any]], tuple[str, tuple[str, ...]]] | None = None
    cells: Cells | None = None  # built-ins read their TrackQC field; added metrics their result
    group: str = "measures"

    def values(self, track: Any) -> dict[str, Any]:
        """The metric's column values for ``track`` (a TrackQC, or ``None``)."""
        if track is None:
            return {c: "" for c in self.columns}
        if self.cells is not None:
            return dict(self.cells(track))
        result = (getattr(track, "metrics", None) or {}).get(self.name) or {}
        return {c: "" if result.get(c) is None else result.get(c) for c in self.columns}


def _num(d: Mapping[str, Any] | None, key: str) -> Any:
    if not d or d.get(key) is None:
        return ""
    return d[key]


def _lse_cells(t: Any) -> dict[str, Any]:
    return {"lse_d": _num(t.lse, "lse_d"), "lse_c": _num(t.lse, "lse_c"), "offset": _num(t.lse, "offset"),
            "ref_lse_d": _num(t.reference, "lse_d"), "ref_lse_c": _num(t.reference, "lse_c")}


def _asd_cells(t: Any) -> dict[str, Any]:
    return {"asd_offset": _num(t.asd, "offset"), "asd_confidence": _num(t.asd, "confidence")}


def _casting_cells(t: Any) -> dict[str, Any]:
    cast = t.casting or {}
    return {"asd_speaking": _num(cast, "speaking"), "driven": _num(cast, "driven"), "casting": cast.get("issue") or ""}


#: The metrics of the report, in column order.  The first three are built in (measured by ``qc_shot``).
METRICS: dict[str, QCMetric] = {
    "syncnet_lse": QCMetric("syncnet_lse", ("lse_d", "lse_c", "offset", "ref_lse_d", "ref_lse_c"), cells=_lse_cells),
    "sync_estimate": QCMetric("sync_estimate", ("asd_offset", "asd_confidence"), cells=_asd_cells),
    "casting": QCMetric("casting", ("asd_speaking", "driven", "casting"), cells=_casting_cells, group="checks"),
}
BUILT_IN = frozenset(METRICS)


def register_metric(metric: QCMetric) -> None:
    """Add ``metric`` to every QC run of this process (``qc_shot`` measures it, the report shows it)."""
    if metric.name in BUILT_IN:
        raise ValueError(f"QC metric {metric.name!r} is built in; choose another name")
    if metric.measure is None:
        raise ValueError(f"QC metric {metric.name!r}: an added metric needs a measure(face) function")
    clash = [c for m in METRICS.values() if m.name != metric.name for c in m.columns if c in metric.columns]
    if clash:
        raise ValueError(f"QC metric {metric.name!r}: columns {clash} are already the report's")
    METRICS[metric.name] = metric


def unregister_metric(name: str) -> None:
    if name in BUILT_IN:
        raise ValueError(f"QC metric {name!r} is built in")
    METRICS.pop(name, None)


def added_metrics() -> list[QCMetric]:
    return [m for n, m in METRICS.items() if n not in BUILT_IN]


def columns(group: str) -> tuple[str, ...]:
    return tuple(c for m in METRICS.values() if m.group == group for c in m.columns)


def row_values(track: Any) -> dict[str, Any]:
    """Every metric's columns for one report row."""
    out: dict[str, Any] = {}
    for m in METRICS.values():
        out.update(m.values(track))
    return out
