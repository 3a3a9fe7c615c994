"""The casting preview: the film at low resolution with every face the plan drives boxed and labelled.

What the operator checks before anything is rendered: each face track of the plan
(``speakers.json``) is drawn on the film, streamed frame by frame (one decoder, one
encoder, nothing held but the current frame):

* a face the plan **drives** gets a box in its voice's colour and a label
  ``CHARACTER <- VOICE`` (the original speaker it was linked to and the dubbed voice
  that will drive its lips), with the link's confidence; inside the box the picture
  is **tinted** in that colour on exactly the frames that will be re-rendered (the
  drive's speaking ranges);
* a face that is tracked but not driven gets a thin grey box labelled with why
  (``not driven: <reason>``);
* the film's own audio is muxed in, so the operator hears who speaks.

The result is an H.264 MP4 (``yuv420p``, at most ``max_height`` lines, width scaled to
keep the aspect ratio, both even), with one frame per source frame.  While streaming,
one small JPEG thumbnail per face track (the clean face at the middle of the track,
from the low-resolution frame) is kept for the review table.

No Prefect here: the flow (``tasks/review.py``) and ``dub preview`` both call
:func:`render_preview` with a casting read from a :class:`~lipsync.speakers.plan.SpeakerPlan`
or a ``speakers.json``.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack
from dubcore.timebase import FrameRange

from .media.frames import EncodeSettings, FrameReader, FrameWriter
from .media.probe import MediaInfo, probe

#: Tint strength inside a driven face's box while it is re-voiced (0 = none, 1 = flat colour).
TINT_ALPHA = 0.45
#: Grey of the box of a face that is not driven (BGR).
UNDRIVEN_BGR = (160, 160, 160)
#: The preview's encoding: small, fast, plays everywhere.
PREVIEW_ENCODE = EncodeSettings(codec="libx264", crf=26, preset="veryfast", pix_fmt="yuv420p")
PREVIEW_AUDIO = ("-c:a", "aac", "-b:a", "96k")
THUMB_HEIGHT = 72


def voice_colour(index: int) -> tuple[int, int, int]:
    """A saturated colour per voice (BGR), well apart for neighbouring indices (golden-ratio hues)."""
    hue = (0.08 + index * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


@dataclass(frozen=True)
class TrackCasting:
    """What the plan decided for one face track (from a speakers.json / SpeakerPlan)."""

    track_id: str
    shot_id: str
    character: str | None  # the original speaker linked to the face; None: not linked
    voice: str | None  # the dubbed voice that drives it; None: not driven
    speaking: tuple[FrameRange, ...] = ()  # frames re-rendered (the drive's ranges)
    confidence: float | None = None
    reason: str = ""
    review: bool = False  # the casting itself flags this decision for a human look

    @property
    def driven(self) -> bool:
        return self.voice is not None and bool(self.speaking)

    @property
    def label(self) -> str:
        if self.driven:
            who = self.character or "?"
            conf = "" if self.confidence is None else f" {self.confidence:.2f}"
            return f"{who} <- {self.voice}{conf}"
        return f"not driven: {self.reason}" if self.reason else "not driven"


@dataclass(frozen=True)
class CastingView:
    """Per track, the casting decision, plus the colour of each voice; built from ``speakers.json``."""

    tracks: Mapping[str, TrackCasting]
    voices: tuple[str, ...]
    off_screen: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def colour(self, voice: str) -> tuple[int, int, int]:
        return voice_colour(self.voices.index(voice) if voice in self.voices else len(self.voices))

    @classmethod
    def from_plan_dict(cls, data: Mapping[str, Any], track_ids: Iterable[str] = ()) -> "CastingView":
        """From the content of a ``speakers.json`` (``SpeakerPlan.to_dict()``).

        Track links may carry ``confidence`` and ``reason`` (newer plans); older ones only
        ``affinity`` and ``source``: both are read.  ``track_ids`` adds the face tracks the
        plan does not mention (tracked but linked to nobody)."""
        links = {str(l["track"]): l for l in data.get("track_links", [])}
        drives = {str(d["track"]): d for d in data.get("drives", [])}
        voice_of_speaker = {str(v["speaker"]): str(v["role"]) for v in data.get("voice_links", [])}
        voices = tuple(dict.fromkeys([str(v["name"]) for v in data.get("voices", [])] +
                                     [str(d["voice"]) for d in drives.values()]))
        off_screen = tuple(str(s) for s in data.get("off_screen", []))
        out: dict[str, TrackCasting] = {}
        for tid in dict.fromkeys([*links, *drives, *[str(t) for t in track_ids]]):
            link, drive = links.get(tid), drives.get(tid)
            speaker = None if link is None else link.get("speaker")
            confidence = None
            if link is not None:
                c = link.get("confidence", link.get("affinity"))
                confidence = None if c is None else float(c)
            if drive is not None:
                reason = str((link or {}).get("reason") or (link or {}).get("source") or "")
                out[tid] = TrackCasting(tid, str(drive["shot"]), None if speaker is None else str(speaker), str(drive["voice"]),
                                        tuple(FrameRange.from_list(r) for r in drive["speaking"]), confidence, reason)
                continue
            if link is None:
                why = "linked to no original speaker (never seen speaking)"
            elif speaker is None:
                why = str(link.get("reason") or "the operator set this face to null")
            elif speaker not in voice_of_speaker:
                why = f"{speaker} has no dubbed voice"
            else:
                why = str(link.get("reason") or f"{voice_of_speaker[speaker]} never speaks on this face")
            shot = str((link or {}).get("shot") or tid.split("/")[0])
            out[tid] = TrackCasting(tid, shot, None if speaker is None else str(speaker), None, (), confidence, why)
        for dec in data.get("decisions", []) or []:  # per-track decisions (newer plans): their words win
            tid = str(dec.get("track", ""))
            if tid not in out:
                continue
            t = out[tid]
            c = dec.get("confidence")
            out[tid] = TrackCasting(t.track_id, t.shot_id, t.character if dec.get("character") is None else str(dec["character"]),
                                    t.voice, t.speaking, t.confidence if c is None else float(c),
                                    str(dec.get("reason") or t.reason), bool(dec.get("review", False)))
        return cls(out, voices, off_screen, tuple(str(n) for n in data.get("notes", [])))


@dataclass
class PreviewResult:
    path: Path
    frames: int
    width: int
    height: int
    #: Per face track: a small JPEG of the clean face (from the preview's own frames).
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def preview_size(width: int, height: int, max_height: int = 360) -> tuple[int, int]:
    """At most ``max_height`` lines (never upscaled), aspect kept, both sides even (4:2:0)."""
    if max_height < 2:
        raise ValueError(f"max_height must be at least 2, got {max_height}")
    h = min(height, max_height)
    w = width * h / height
    return max(2, int(round(w / 2)) * 2), max(2, (h // 2) * 2)


def _speaking_mask(t: TrackCasting, track: FaceTrack) -> np.ndarray:
    mask = np.zeros(track.frames.duration, bool)
    for r in t.speaking:
        a, b = max(r.start, track.frames.start), min(r.end, track.frames.end)
        if b > a:
            mask[a - track.frames.start : b - track.frames.start] = True
    return mask


def _thumbnail(frame: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    import cv2

    x1, y1, x2, y2 = box
    h, w = frame.shape[:2]
    mx, my = (x2 - x1) // 4, (y2 - y1) // 4
    crop = frame[max(0, y1 - my) : min(h, y2 + my), max(0, x1 - mx) : min(w, x2 + mx)]
    if crop.size == 0:
        return b""
    scale = THUMB_HEIGHT / crop.shape[0]
    crop = cv2.resize(crop, (max(1, int(round(crop.shape[1] * scale))), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return bytes(buf) if ok else b""


def _draw_label(frame: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    import cv2

    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    h, w = frame.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y0 = y - th - base - 4 if y - th - base - 4 >= 0 else y  # above the box, else inside it
    y0 = int(min(max(0, y0), max(0, h - th - base - 4)))
    cv2.rectangle(frame, (x, y0), (x + tw + 4, y0 + th + base + 4), (0, 0, 0), -1)
    cv2.putText(frame, text, (x + 2, y0 + th + 2), font, scale, colour, thick, cv2.LINE_AA)


def render_preview(
    film: str | os.PathLike[str],
    tracks: Sequence[FaceTrack],
    casting: CastingView,
    out: str | os.PathLike[str],
    *,
    info: MediaInfo | None = None,
    max_height: int = 360,
    with_audio: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> PreviewResult:
    """Write the casting preview of ``film`` to ``out`` (see the module docstring); returns its size,
    frame count and the thumbnails.  The file appears only when complete."""
    import cv2

    film = Path(film)
    info = info or probe(film)
    video = info.require_video()
    width, height = preview_size(video.width, video.height, max_height)
    sx, sy = width / video.width, height / video.height
    by_start = sorted(tracks, key=lambda t: (t.frames.start, t.id))
    default = lambda t: TrackCasting(t.id, t.shot_id, None, None, (), None, "not in the casting")  # noqa: E731
    decided = {t.id: casting.tracks.get(t.id) or default(t) for t in by_start}
    masks = {t.id: _speaking_mask(decided[t.id], t) for t in by_start}
    thumbs: dict[str, bytes] = {}
    total = video.frame_count
    audio = film if with_audio and info.audio else None
    active: list[FaceTrack] = []
    nxt = 0
    with FrameReader(film, pix_fmt="bgr24", size=(width, height), info=info) as reader, \
            FrameWriter(out, width=width, height=height, fps=Fraction(video.fps), pix_fmt="bgr24", settings=PREVIEW_ENCODE,
                        audio=audio, audio_codec=PREVIEW_AUDIO, expected_frames=total) as writer:
        for i, frame in enumerate(reader):
            while nxt < len(by_start) and by_start[nxt].frames.start <= i:
                active.append(by_start[nxt])
                nxt += 1
            active = [t for t in active if i < t.frames.end]
            if active:
                frame = frame.copy()  # the reader's buffer is read-only
                boxes = []
                for t in active:
                    obs = t.observations[i - t.frames.start]
                    x1, y1, x2, y2 = obs.box
                    b = (int(max(0, round(x1 * sx))), int(max(0, round(y1 * sy))),
                         int(min(width - 1, round(x2 * sx))), int(min(height - 1, round(y2 * sy))))
                    boxes.append((t, b))
                    mid = t.frames.start + t.frames.duration // 2
                    if i == mid and b[2] > b[0] and b[3] > b[1]:
                        thumbs[t.id] = _thumbnail(frame, b)  # before anything is drawn on it
                for t, (x1, y1, x2, y2) in boxes:
                    d = decided[t.id]
                    if x2 <= x1 or y2 <= y1:
                        continue
                    if d.driven:
                        colour = casting.colour(str(d.voice))
                        if masks[t.id][i - t.frames.start]:
                            region = frame[y1:y2, x1:x2].astype(np.float32)
                            frame[y1:y2, x1:x2] = (region * (1 - TINT_ALPHA) + np.array(colour, np.float32) * TINT_ALPHA).astype(np.uint8)
                        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 2)
                    else:
                        colour = UNDRIVEN_BGR
                        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 1)
                    _draw_label(frame, d.label, x1, y1, colour)
            writer.write(frame)
            if progress is not None and (i % 50 == 0 or i + 1 == total):
                progress(i + 1, total)
    return PreviewResult(Path(out), total, width, height, thumbs)
