"""QC verdicts and the reports operators read: ``qc/report.json``, ``qc/report.csv``, ``qc/report.html``.

Per face track that was re-voiced, two sync signals (either may be missing):

* **SyncNet LSE** (:mod:`lipsync.qc.lse`): LSE-D (lower is better), LSE-C (higher
  is better) and the offset of the output against the voice that drove it, and
  the same of the *original* shot against the original audio as the reference;
* **Light-ASD offset** (:mod:`lipsync.qc.asd_sync`): the audio shift that makes the
  face look most like it is speaking, and a confidence.

Verdict of a track (:func:`verdict`, thresholds :class:`QCThresholds`):

* with LSE and a reference: **pass** when LSE-C is at least ``reference LSE-C -
  lse_c_drop_pass``, LSE-D at most ``reference LSE-D + lse_d_rise_pass`` and
  ``|offset| <= max_offset_pass``; **fail** when LSE-C falls more than
  ``lse_c_drop_fail`` below the reference or ``|offset| > max_offset_fail``;
  **review** otherwise;
* with LSE and no reference: the same against the absolute bounds
  ``lse_c_pass`` / ``lse_d_pass`` / ``lse_c_fail``;
* without SyncNet (the weight-free estimate of :mod:`lipsync.qc.asd_sync`: Light-ASD
  and the mouth's fit to the voice's level envelope): **never pass**, since nothing
  measured can tell good lip sync from a mouth that merely moves while a voice
  speaks.  **unverified** (the reason says so and gives the estimated offset),
  unless the estimate is clear, i.e. its confidence (R^2 of the mouth against
  the voice level) is at least ``asd_confidence_pass`` and its two signals
  (Light-ASD, mouth envelope) agree within a frame: then **fail** when
  ``|offset| > max_offset_fail``
  and **review** when ``|offset| > max_offset_pass + 1`` (the estimate's
  measured error is one frame, so 2 frames is within reach of an in-sync face);
* with neither: **unverified** ("no sync measurement").

Verdicts, worst first: fail, review, unverified, pass.  A shot's verdict is its
worst track's; a shot left unchanged passes (its picture is the original's),
unless the casting check (:mod:`lipsync.qc.casting`, :func:`with_casting`) flags a
face of it: a face that speaks in the original but was not re-voiced, or a
re-voiced face that never speaks in the original, makes its track and its shot
at least **review**.  Defaults: the Wav2Lip paper reports LSE-D 6.7 / LSE-C 7.8 on
real LRS2 videos and about 6.4-6.5 / 7.5-7.8 for Wav2Lip's output; a re-voiced
face within 1 point of LSE-C of its own original passes, more than 3 points
below fails.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .metrics import columns as metric_columns
from .metrics import row_values

from dubcore.schema import atomic_path, write_json

KIND = "qc"
VERDICTS = ("fail", "review", "unverified", "pass")  # worst first
RANK = {v: i for i, v in enumerate(VERDICTS)}  # lower is worse


@dataclass(frozen=True)
class QCThresholds:
    lse_c_drop_pass: float = 1.0
    lse_d_rise_pass: float = 0.5
    lse_c_drop_fail: float = 3.0
    lse_c_pass: float = 6.0
    lse_d_pass: float = 8.0
    lse_c_fail: float = 3.0
    max_offset_pass: int = 1
    max_offset_fail: int = 3
    asd_confidence_pass: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrackQC:
    track_id: str
    voice: str | None
    frames: tuple[int, int]
    synthesized: int
    untouched: Mapping[str, int]
    lse: Mapping[str, Any] | None = None  # output vs its voice: lse_d, lse_c, offset, framewise_conf
    reference: Mapping[str, Any] | None = None  # original shot vs original audio
    asd: Mapping[str, Any] | None = None  # weight-free estimate (lipsync.qc.asd_sync.SyncEstimate.to_dict())
    verdict: str = "unverified"
    reasons: tuple[str, ...] = ()
    casting: Mapping[str, Any] | None = None  # lipsync.qc.casting.CastingCheck.to_dict() of this track
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # added metrics (lipsync.qc.metrics) by name

    def to_dict(self) -> dict[str, Any]:
        d = {
            "track": self.track_id,
            "voice": self.voice,
            "frames": list(self.frames),
            "synthesized": self.synthesized,
            "untouched": dict(self.untouched),
            "lse": dict(self.lse) if self.lse else None,
            "reference": dict(self.reference) if self.reference else None,
            "asd": dict(self.asd) if self.asd else None,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "casting": dict(self.casting) if self.casting else None,
        }
        if self.metrics:
            d["metrics"] = {k: dict(v) for k, v in self.metrics.items()}
        return d


@dataclass(frozen=True)
class ShotQC:
    shot_id: str
    frames: tuple[int, int]
    start_timecode: str
    end_timecode: str
    status: str  # rendered | unchanged
    reason: str | None
    tracks: tuple[TrackQC, ...]
    verdict: str
    thumbnails: Mapping[str, str] = field(default_factory=dict)  # "before"/"after" -> data: URI (JPEG)
    casting: tuple[Mapping[str, Any], ...] = ()  # CastingCheck.to_dict() of every face of the shot (empty: not checked)

    @property
    def casting_issues(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(c for c in self.casting if c.get("issue"))

    def to_dict(self, with_images: bool = False) -> dict[str, Any]:
        d = {
            "shot": self.shot_id,
            "frames": list(self.frames),
            "start_timecode": self.start_timecode,
            "end_timecode": self.end_timecode,
            "status": self.status,
            "reason": self.reason,
            "verdict": self.verdict,
            "tracks": [t.to_dict() for t in self.tracks],
            "casting": [dict(c) for c in self.casting],
        }
        if with_images:
            d["thumbnails"] = dict(self.thumbnails)
        return d


#: Shot statuses whose faces are measured: re-rendered by the flow, or handed to ``dub qc`` as they are.
MEASURED = ("rendered", "measured")

def _worst(verdicts: Iterable[str]) -> str:
    vs = list(verdicts)
    for v in VERDICTS:
        if v in vs:
            return v
    return "pass"


def at_least_review(v: str) -> str:
    """``v`` made at least *review* (fail stays fail)."""
    return _worst([v, "review"])


def verdict(lse: Mapping[str, Any] | None, reference: Mapping[str, Any] | None, asd: Mapping[str, Any] | None,
            t: QCThresholds = QCThresholds()) -> tuple[str, tuple[str, ...]]:
    """``(verdict, reasons)`` of one track (see the module docstring)."""
    if lse is not None:
        c, d, off = float(lse["lse_c"]), float(lse["lse_d"]), int(lse["offset"])
        reasons = []
        if reference is not None:
            rc, rd = float(reference["lse_c"]), float(reference["lse_d"])
            if c < rc - t.lse_c_drop_fail:
                reasons.append(f"LSE-C {c:.2f} is more than {t.lse_c_drop_fail} below the original's {rc:.2f}")
            if abs(off) > t.max_offset_fail:
                reasons.append(f"offset {off:+d} frames (more than {t.max_offset_fail})")
            if reasons:
                return "fail", tuple(reasons)
            ok = c >= rc - t.lse_c_drop_pass and d <= rd + t.lse_d_rise_pass and abs(off) <= t.max_offset_pass
            if ok:
                return "pass", (f"LSE-C {c:.2f} / LSE-D {d:.2f} against the original's {rc:.2f} / {rd:.2f}, offset {off:+d}",)
            return "review", (f"LSE-C {c:.2f} / LSE-D {d:.2f} against the original's {rc:.2f} / {rd:.2f}, offset {off:+d}",)
        if c < t.lse_c_fail:
            reasons.append(f"LSE-C {c:.2f} below {t.lse_c_fail}")
        if abs(off) > t.max_offset_fail:
            reasons.append(f"offset {off:+d} frames (more than {t.max_offset_fail})")
        if reasons:
            return "fail", tuple(reasons)
        if c >= t.lse_c_pass and d <= t.lse_d_pass and abs(off) <= t.max_offset_pass:
            return "pass", (f"LSE-C {c:.2f}, LSE-D {d:.2f}, offset {off:+d} (no reference)",)
        return "review", (f"LSE-C {c:.2f}, LSE-D {d:.2f}, offset {off:+d} (no reference)",)
    if asd is not None:
        off, conf = int(asd["offset"]), float(asd["confidence"])
        what = "estimated offset" if asd.get("method") else "Light-ASD offset"
        text = f"{what} {off:+d} frames, confidence {conf:.2f}"
        clear = conf >= t.asd_confidence_pass and bool(asd.get("agree", True))
        if asd.get("method") and not asd.get("agree", True):
            text += f", Light-ASD {int(asd['asd_offset']):+d} and mouth {int(asd['mouth_offset']):+d} disagree"
        if clear and abs(off) > t.max_offset_fail:
            return "fail", (f"{text} (no SyncNet weights): more than {t.max_offset_fail} frames out of sync",)
        if clear and abs(off) > t.max_offset_pass + 1:
            return "review", (f"{text} (no SyncNet weights): likely out of sync",)
        return "unverified", (f"lip sync not verified: no SyncNet weights; {text}",)
    return "unverified", ("no sync measurement",)


def shot_verdict(status: str, tracks: Sequence[TrackQC], casting: Sequence[Mapping[str, Any]] = ()) -> str:
    """The worst of the shot's track verdicts (an unchanged shot: pass), made at least *review* by a casting issue."""
    v = "pass" if status not in MEASURED or not tracks else _worst(t.verdict for t in tracks)
    if any(c.get("issue") for c in casting):
        v = at_least_review(v)
    return v


def with_casting(shot: ShotQC, checks: Iterable[Any]) -> ShotQC:
    """``shot`` with the casting checks of its faces (:func:`lipsync.qc.casting.casting_checks`): each
    rendered track gets its check, a flagged one is made at least *review* with the check's reason, and the
    shot's verdict is recomputed (a flagged face not rendered makes the shot *review* too)."""
    from dataclasses import replace

    checks = list(checks)
    by_track = {c.track_id: c for c in checks}
    tracks = []
    for t in shot.tracks:
        c = by_track.get(t.track_id)
        if c is None:
            tracks.append(t)
            continue
        reasons = tuple(r for r in t.reasons if not r.startswith("casting: "))
        v = t.verdict
        if c.issue:
            v = at_least_review(v)
            reasons = reasons + (c.reason,)
        tracks.append(replace(t, casting=c.to_dict(), verdict=v, reasons=reasons))
    dicts = tuple(c.to_dict() for c in checks)
    return replace(shot, tracks=tuple(tracks), casting=dicts, verdict=shot_verdict(shot.status, tracks, dicts))


@dataclass(frozen=True)
class QCReport:
    title: str
    film: str
    fps: str
    thresholds: QCThresholds
    shots: tuple[ShotQC, ...]
    signals: Mapping[str, Any] = field(default_factory=dict)  # which models were used

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(1 for s in self.shots if s.verdict == v) for v in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "film": self.film,
            "fps": self.fps,
            "thresholds": self.thresholds.to_dict(),
            "signals": dict(self.signals),
            "summary": self.counts,
            "shots": [s.to_dict() for s in self.shots],
        }

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per shot and track (a shot without tracks: one row), and one per face the casting check
        flags that was not rendered: the CSV and the table artifact."""
        out = []
        for s in self.shots:
            base = {"shot": s.shot_id, "start": s.start_timecode, "end": s.end_timecode, "status": s.status, "shot_verdict": s.verdict}
            rendered = {t.track_id for t in s.tracks}
            flagged = [c for c in s.casting_issues if c["track"] not in rendered]
            for t in s.tracks or ((None,) if not flagged else ()):
                row = dict(base)
                row.update({
                    "track": t.track_id if t else "",
                    "voice": (t.voice or "") if t else "",
                    "synthesized": t.synthesized if t else 0,
                    "verdict": t.verdict if t else s.verdict,
                    "reason": "; ".join(t.reasons) if t else (s.reason or ""),
                })
                row.update(row_values(t))  # every registered metric's columns (lipsync.qc.metrics)
                row = {k: row[k] for k in csv_fields()}
                out.append(row)
            for c in flagged:
                from .casting import CastingCheck

                row = dict(base)
                row.update({k: "" for k in csv_fields() if k not in base})
                row.update({"track": c["track"], "voice": c.get("voice") or "", "synthesized": 0, "verdict": "review",
                            "reason": "; ".join(x for x in (s.reason, CastingCheck.from_dict(c).reason) if x),
                            "asd_speaking": _num(c, "speaking"), "driven": _num(c, "driven"), "casting": c["issue"]})
                out.append(row)
        return out


def _num(d: Mapping[str, Any] | None, key: str) -> Any:
    if not d or d.get(key) is None:
        return ""
    v = d[key]
    return round(float(v), 3) if isinstance(v, float) else v


# --------------------------------------------------------------------------- images


def thumbnail(frame_bgr: np.ndarray, width: int = 240) -> str:
    """A JPEG data URI of ``frame_bgr`` scaled to ``width`` pixels wide."""
    import cv2

    h, w = frame_bgr.shape[:2]
    small = cv2.resize(frame_bgr, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("thumbnail: JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _plot(values: Sequence[float], width: int = 260, height: int = 70) -> str:
    """An inline SVG line plot of a framewise confidence (empty frame when there is none)."""
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<rect width="{width}" height="{height}" fill="#f7f7f7" stroke="#ccc"/>']
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if len(vals) >= 2:
        lo, hi = min(vals + [0.0]), max(vals + [0.0])
        span = (hi - lo) or 1.0
        y = lambda v: height - 4 - (v - lo) / span * (height - 8)  # noqa: E731
        x = lambda i: 2 + i * (width - 4) / (len(vals) - 1)  # noqa: E731
        parts.append(f'<line x1="0" x2="{width}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}" stroke="#bbb" stroke-dasharray="3,3"/>')
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vals))
        parts.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{pts}"/>')
    else:
        parts.append(f'<text x="8" y="{height // 2 + 4}" font-size="11" fill="#888">no framewise curve</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- writers


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#fafafa;cursor:pointer;user-select:none}
.v-pass{color:#1a7f37;font-weight:600}.v-unverified{color:#57606a;font-weight:600}.v-review{color:#9a6700;font-weight:600}
.v-fail{color:#cf222e;font-weight:600}.casting{color:#9a6700}
img{display:block;border:1px solid #ccc}
.track{margin-bottom:8px;min-width:280px}
.counts span{margin-right:16px}
"""

_JS = """
(function(){
  var order=__ORDER__;
  var tbody=document.querySelector('#shots tbody');
  function sortBy(key, dir){
    var rows=Array.prototype.slice.call(tbody.querySelectorAll('tr.shot'));
    rows.sort(function(a,b){
      var x=a.dataset[key], y=b.dataset[key];
      if(key==='verdict'){x=order[x];y=order[y];} else {x=+x;y=+y;}
      return dir*(x<y?-1:x>y?1:0);
    });
    rows.forEach(function(r){tbody.appendChild(r);});
  }
  var m=/sort=(verdict|index)/.exec(location.hash); if(m){sortBy(m[1],1);}
  var dirs={};
  document.querySelectorAll('th[data-sort]').forEach(function(th){
    th.addEventListener('click',function(){
      var k=th.dataset.sort; dirs[k]=-(dirs[k]||-1); sortBy(k,dirs[k]);
    });
  });
})();
"""


def render_html(report: QCReport) -> str:
    e = html.escape
    c = report.counts
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>QC - {e(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>QC: {e(report.title)}</h1>",
        f"<p>{e(report.film)} at {e(report.fps)} fps. Signals: "
        f"{e(', '.join(f'{k}: {v}' for k, v in report.signals.items() if k not in ('notes', 'retried')) or 'none')}.</p>",
        "".join(f"<p class='note'>Note: {e(str(n))}</p>" for n in report.signals.get("notes", [])),
        "<p class='counts'>" + "".join(f"<span class='v-{v}'>{v} {c[v]}</span>" for v in VERDICTS)
        + " (click a column header to sort; <code>#sort=verdict</code> opens sorted)</p>",
        "<table id='shots'><thead><tr><th data-sort='index'>shot</th><th data-sort='verdict'>verdict</th>"
        "<th>before</th><th>after</th><th>framewise confidence</th><th>numbers</th></tr></thead><tbody>",
    ]
    for i, s in enumerate(report.shots):
        before = s.thumbnails.get("before")
        after = s.thumbnails.get("after")
        curve: list[float] = []
        for t in s.tracks:
            if t.lse and t.lse.get("framewise_conf"):
                curve = list(t.lse["framewise_conf"])
                break
        nums = []
        for t in s.tracks:
            cells = [f"<b>{e(t.track_id)}</b> ({e(t.voice or '-')})", f"<span class='v-{t.verdict}'>{t.verdict}</span>",
                     f"synthesized {t.synthesized}"]
            if t.lse:
                cells.append(f"LSE-D {float(t.lse['lse_d']):.2f} LSE-C {float(t.lse['lse_c']):.2f} offset {int(t.lse['offset']):+d}")
            if t.reference:
                cells.append(f"original LSE-D {float(t.reference['lse_d']):.2f} LSE-C {float(t.reference['lse_c']):.2f}")
            if t.asd and t.asd.get("method"):
                cells.append(f"estimated offset {int(t.asd['offset']):+d} (Light-ASD {int(t.asd['asd_offset']):+d}, "
                             f"mouth {int(t.asd['mouth_offset']):+d}{'' if t.asd.get('agree') else ': disagree'}), "
                             f"mouth R&sup2; {float(t.asd['confidence']):.2f}")
            elif t.asd:
                cells.append(f"ASD offset {int(t.asd['offset']):+d} conf {float(t.asd['confidence']):.2f}")
            if t.untouched:
                cells.append("untouched: " + ", ".join(f"{k} {v}" for k, v in t.untouched.items()))
            if t.casting:
                cells.append(_casting_cell(t.casting))
            for name, result in (t.metrics or {}).items():  # added metrics (lipsync.qc.metrics)
                cells.append(f"{e(name)}: " + e(", ".join(f"{k} {v}" for k, v in result.items())))
            cells.append(f"<i>{e('; '.join(t.reasons))}</i>")
            nums.append("<div class='track'>" + "<br>".join(cells) + "</div>")
        rendered = {t.track_id for t in s.tracks}
        for c in s.casting_issues:
            if c["track"] not in rendered:
                from .casting import CastingCheck

                nums.append(f"<div class='track casting'><b>{e(str(c['track']))}</b> <span class='v-review'>review</span> (not rendered)<br>"
                            f"{_casting_cell(c)}<br><i>{e(CastingCheck.from_dict(c).reason or '')}</i></div>")
        if not s.tracks and not s.casting_issues:
            nums.append(f"<div class='track'>{e(s.reason or s.status)}</div>")
        img = lambda uri, alt: f"<img src='{uri}' alt='{alt}' width='240'>" if uri else "<span>-</span>"  # noqa: E731
        out.append(
            f"<tr class='shot' id='{e(s.shot_id)}' data-index='{i}' data-verdict='{s.verdict}'>"
            f"<td><b>{e(s.shot_id)}</b><br>{e(s.start_timecode)} - {e(s.end_timecode)}<br>frames {s.frames[0]}-{s.frames[1]}<br>{e(s.status)}</td>"
            f"<td class='v-{s.verdict}'>{s.verdict}</td>"
            f"<td>{img(before, 'before ' + e(s.shot_id))}</td><td>{img(after, 'after ' + e(s.shot_id))}</td>"
            f"<td>{_plot(curve)}</td><td>{''.join(nums)}</td></tr>"
        )
    js = _JS.replace("__ORDER__", "{" + ",".join(f"{v}:{i}" for i, v in enumerate(VERDICTS)) + "}")
    out.append(f"</tbody></table><script>{js}</script></body></html>")
    return "".join(out)


ROW_FIELDS = ("shot", "start", "end", "status", "shot_verdict", "track", "voice", "synthesized")


def csv_fields() -> tuple[str, ...]:
    """The CSV's columns: the row's own, each metric's measures, the verdict and reason, each metric's checks."""
    return ROW_FIELDS + metric_columns("measures") + ("verdict", "reason") + metric_columns("checks")


#: The columns with the built-in metrics only.
CSV_FIELDS = ("shot", "start", "end", "status", "shot_verdict", "track", "voice", "synthesized", "lse_d", "lse_c", "offset",
              "ref_lse_d", "ref_lse_c", "asd_offset", "asd_confidence", "verdict", "reason", "asd_speaking", "driven", "casting")


def _casting_cell(c: Mapping[str, Any]) -> str:
    e = html.escape
    issue = c.get("issue")
    speaking = "not in the ASD result" if c.get("speaking") is None else f"{c['speaking']} speaking frames in the original"
    text = f"casting: {speaking}, {c.get('driven', 0)} driven ({c.get('both', 0)} both)"
    return f"<span class='casting'>{e(text)}{': <b>' + e(str(issue)) + '</b>' if issue else ''}</span>"


def write_qc_report(folder: str | os.PathLike[str], report: QCReport) -> dict[str, Path]:
    """Write ``report.json`` (versioned), ``report.csv`` and ``report.html`` into ``folder``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(folder / "report.json", KIND, report.to_dict())}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_fields(), lineterminator="\n")
    writer.writeheader()
    for row in report.rows():
        writer.writerow(row)
    with atomic_path(folder / "report.csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    paths["csv"] = folder / "report.csv"
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    paths["html"] = folder / "report.html"
    return paths


def read_qc_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    from dubcore.schema import read_json

    return read_json(path, KIND)


__all__ = ["QCThresholds", "TrackQC", "ShotQC", "QCReport", "VERDICTS", "RANK", "verdict", "shot_verdict", "with_casting",
           "at_least_review", "thumbnail", "render_html", "write_qc_report", "read_qc_report"]
