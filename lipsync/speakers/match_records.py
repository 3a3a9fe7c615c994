"""Casting, the records: its parameters, the links it makes and the decision on every face track.

Part of :mod:`lipsync.speakers.match` (which re-exports every name here and whose
docstring gives the rules).  No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dubcore.timebase import FrameRange

from .asd_result import AsdParams

__all__ = ["Casting", "CastingParams", "CharacterGroup", "Decision", "DubLink", "TrackLink"]


@dataclass(frozen=True)
class CastingParams:
    """The rules' few parameters (see :mod:`lipsync.speakers.match`); the ASD's own come from :class:`AsdParams`."""

    asd: AsdParams = AsdParams()
    identity_ratio: float = 0.5  # a speaker is a face's voice when the face speaks in most of its lines there
    min_voice_overlap: float = 0.3  # a voice needs this share of its speech inside a character's lines
    review_below: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"asd": self.asd.to_dict(), "identity_ratio": self.identity_ratio,
                "min_voice_overlap": self.min_voice_overlap, "review_below": self.review_below}


@dataclass(frozen=True)
class TrackLink:
    """A face track speaking as a character (id: its main diarized speaker), with the frames where it speaks."""

    track_id: str
    shot_id: str
    speaker: str
    affinity: float  # identity evidence: share of the speaker's lines (face on screen) where this face speaks
    speaking: tuple[FrameRange, ...]
    source: str = "asd"  # or "override"
    confidence: float = 1.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track_id,
            "shot": self.shot_id,
            "speaker": self.speaker,
            "affinity": round(self.affinity, 4),
            "confidence": round(self.confidence, 4),
            "speaking": [r.to_list() for r in self.speaking],
            "source": self.source,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DubLink:
    role: str
    speaker: str  # the character's id
    overlap: float  # fraction of the voice's speech inside the character's lines
    source: str = "overlap"  # or "override"


@dataclass(frozen=True)
class CharacterGroup:
    """A character: the diarized speakers and the face tracks that are one person."""

    id: str
    speakers: tuple[str, ...]
    tracks: tuple[str, ...]

    @property
    def on_screen(self) -> bool:
        return bool(self.tracks)


@dataclass(frozen=True)
class Decision:
    """What the casting decided for one face track, how sure it is, and why."""

    track_id: str
    shot_id: str
    character: str | None
    voice: str | None
    driven: bool
    confidence: float
    reason: str
    review: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track_id, "shot": self.shot_id, "character": self.character, "voice": self.voice,
                "driven": self.driven, "confidence": round(self.confidence, 4), "review": self.review, "reason": self.reason}


@dataclass(frozen=True)
class Casting:
    """The result: links, characters, off-screen speakers, one decision per track."""

    track_links: tuple[TrackLink, ...]
    dub_links: tuple[DubLink, ...]
    off_screen: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    characters: tuple[CharacterGroup, ...] = ()
    decisions: tuple[Decision, ...] = ()

    def role_for_speaker(self, speaker: str) -> str | None:
        """The voice that dubs character ``speaker`` (the best-overlapping one when several share its audio)."""
        roles = self.roles_for(speaker)
        return roles[0] if roles else None

    def roles_for(self, speaker: str) -> tuple[str, ...]:
        links = [d for d in self.dub_links if d.speaker == speaker]
        links.sort(key=lambda d: (d.source != "override", -d.overlap))
        return tuple(d.role for d in links)

    def character_of(self, speaker: str) -> str | None:
        """The character that diarized speaker ``speaker`` belongs to."""
        for c in self.characters:
            if speaker in c.speakers or speaker == c.id:
                return c.id
        return None

    def drives(self) -> dict[str, tuple[str, tuple[FrameRange, ...]]]:
        """``track_id -> (dub role, speaking frame ranges)`` for every track that must speak the dub."""
        out: dict[str, tuple[str, tuple[FrameRange, ...]]] = {}
        for link in self.track_links:
            role = self.role_for_speaker(link.speaker)
            if role is not None and link.speaking:
                out[link.track_id] = (role, link.speaking)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_links": [t.to_dict() for t in self.track_links],
            "dub_links": [
                {"role": d.role, "speaker": d.speaker, "overlap": round(d.overlap, 4), "confidence": round(d.overlap, 4)
                 if d.source != "override" else 1.0, "source": d.source} for d in self.dub_links
            ],
            "off_screen": list(self.off_screen),
            "drives": {tid: {"role": role, "speaking": [r.to_list() for r in ranges]} for tid, (role, ranges) in self.drives().items()},
            "decisions": [d.to_dict() for d in self.decisions],
            "notes": list(self.notes),
        }
