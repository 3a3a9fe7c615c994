"""The speaker plan of a film: who speaks on screen, as which character, driven by which dubbed voice.

Inputs (each from its own stage):

* the shots and face tracks;
* per track, the Light-ASD score of every frame (:mod:`lipsync.speakers.asd`);
* the diarized turns of the original dialogue (:mod:`lipsync.speakers.diarize`);
* the dubbed **voices** (:class:`DubVoice`): one per character stem (where it
  speaks comes from a voice-activity detector on the stem), or one per diarized
  speaker of a mixed dialogue stem (all of them share that stem's audio);
* the operator's overrides (:class:`Overrides`).

Output (:class:`SpeakerPlan`, written as ``speakers.json``):

* **links**: face track -> original speaker, per shot (:func:`~lipsync.speakers.match.link_tracks`);
* **characters**: one id per original speaker for the whole film, with every
  face track that speaks with that voice in any shot: identity across shots comes
  from the voice (face tracks never seen speaking get no character);
* **voices**: dubbed voice -> original speaker (names from the manifest's
  overrides, else the Hungarian assignment on speech overlap);
* **off_screen**: original speakers linked to no face: nothing is lip-synced to them;
* **drives**: per face track, the dubbed voice that drives its lips and the frame
  ranges where it is re-synthesised: where the dubbed voice speaks *or* where the
  original speaker's lips moved on that face (so the original mouth movements are
  replaced, and closed, where the dub is silent), widened by ``pad_frames`` and
  clipped to the track.  Frames outside these ranges keep the original picture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack, Shot, SpeakerTurn
from dubcore.schema import read_json, write_json
from dubcore.timebase import FrameRange, format_rate, parse_rate, sample_to_frame

from .match import Casting, CastingParams, Decision, cast, ranges_of

KIND = "speakers"


class CastingError(ValueError):
    """An override names a speaker, voice or track that does not exist."""


@dataclass(frozen=True)
class DubVoice:
    """One dubbed voice that can drive faces.

    ``audio`` is a mono WAV at ``sample_rate`` whose sample 0 is the film's frame 0;
    ``speech`` the half-open sample ranges where this voice speaks."""

    name: str
    audio: str
    sample_rate: int
    speech: tuple[tuple[int, int], ...]
    source: str = "stem"  # "stem" (a character stem) or "diarized" (a speaker of a mixed stem)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "audio": self.audio, "sample_rate": self.sample_rate, "source": self.source,
                "speech": [list(s) for s in self.speech]}


@dataclass(frozen=True)
class Overrides:
    """The operator's word: ``voices`` dubbed voice -> original speaker; ``tracks`` face track
    -> original speaker, or None for "never lip-sync this face"."""

    voices: Mapping[str, str] = field(default_factory=dict)
    tracks: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Drive:
    track_id: str
    shot_id: str
    voice: str
    audio: str
    speaking: tuple[FrameRange, ...]

    @property
    def frames(self) -> int:
        return sum(r.duration for r in self.speaking)

    def to_dict(self) -> dict[str, Any]:
        return {"track": self.track_id, "shot": self.shot_id, "voice": self.voice, "audio": self.audio,
                "speaking": [r.to_list() for r in self.speaking], "frames": self.frames}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Drive":
        return cls(str(d["track"]), str(d["shot"]), str(d["voice"]), str(d["audio"]),
                   tuple(FrameRange.from_list(r) for r in d["speaking"]))


@dataclass(frozen=True)
class Character:
    id: str  # the original speaker's id: one id for the whole film
    tracks: tuple[str, ...]
    shots: tuple[str, ...]
    voice: str | None
    on_screen: bool
    speakers: tuple[str, ...] = ()  # the diarized speakers that are this character's voice

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "on_screen": self.on_screen, "voice": self.voice, "speakers": list(self.speakers or (self.id,)),
                "tracks": list(self.tracks), "shots": list(self.shots)}


@dataclass(frozen=True)
class SpeakerPlan:
    fps: Fraction
    frame_count: int
    casting: Casting
    voices: tuple[DubVoice, ...]
    characters: tuple[Character, ...]
    drives: tuple[Drive, ...]
    turns: tuple[SpeakerTurn, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def off_screen(self) -> tuple[str, ...]:
        return self.casting.off_screen

    def drives_in(self, shot_id: str) -> list[Drive]:
        return [d for d in self.drives if d.shot_id == shot_id]

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self.casting.decisions

    def drive_of(self, track_id: str) -> Drive | None:
        return next((d for d in self.drives if d.track_id == track_id), None)

    def voice_of(self, speaker: str) -> str | None:
        return self.casting.role_for_speaker(speaker)

    def to_dict(self) -> dict[str, Any]:
        casting = self.casting.to_dict()
        return {
            "fps": format_rate(self.fps),
            "frame_count": self.frame_count,
            "characters": [c.to_dict() for c in self.characters],
            "off_screen": list(self.off_screen),
            "voices": [v.to_dict() for v in self.voices],
            "voice_links": casting["dub_links"],
            "track_links": casting["track_links"],
            "drives": [d.to_dict() for d in self.drives],
            "decisions": casting["decisions"],
            "review": [d for d in casting["decisions"] if d["review"]],
            "original_turns": [t.to_dict() for t in self.turns],
            "notes": list(self.notes) + list(self.casting.notes),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        return write_json(path, KIND, self.to_dict())


def read_drives(path: str | os.PathLike[str]) -> tuple[Drive, ...]:
    """The drives of a ``speakers.json`` (what the lip-sync stage needs from it)."""
    data = read_json(path, KIND)
    return tuple(Drive.from_dict(d) for d in data["drives"])


def _mask(ranges: Sequence[tuple[int, int]], rate: int, fps: Fraction, frame_count: int) -> np.ndarray:
    mask = np.zeros(frame_count, bool)
    for a, b in ranges:
        f0 = sample_to_frame(a, fps, rate, "floor")
        f1 = sample_to_frame(b, fps, rate, "ceil")
        mask[max(0, f0) : min(frame_count, f1)] = True
    return mask


def _dilate(mask: np.ndarray, pad: int) -> np.ndarray:
    if pad <= 0 or not mask.any():
        return mask
    out = mask.copy()
    for k in range(1, pad + 1):
        out[k:] |= mask[:-k]
        out[:-k] |= mask[k:]
    return out


def _check_overrides(overrides: Overrides, voices: Sequence[DubVoice], turns: Sequence[SpeakerTurn],
                     tracks: Sequence[FaceTrack]) -> None:
    speakers = sorted({t.speaker for t in turns})
    names = [v.name for v in voices]
    track_ids = {t.id for t in tracks}
    for voice, speaker in overrides.voices.items():
        if voice not in names:
            raise CastingError(f"casting.voices: no dubbed voice named {voice!r}; the voices are {names}")
        if speaker not in speakers:
            raise CastingError(
                f"casting.voices.{voice}: no original speaker {speaker!r}; diarization found {speakers} "
                f"(see original.rttm / speakers.json of a previous run)"
            )
    for track, speaker in overrides.tracks.items():
        if track not in track_ids:
            raise CastingError(f"casting.tracks: no face track {track!r} (see faces.json for the track ids)")
        if speaker is not None and speaker not in speakers:
            raise CastingError(f"casting.tracks.{track}: no original speaker {speaker!r}; diarization found {speakers}")


def plan_speakers(
    shots: Sequence[Shot],
    tracks: Sequence[FaceTrack],
    scores: Mapping[str, np.ndarray],
    turns: Sequence[SpeakerTurn],
    voices: Sequence[DubVoice],
    fps: Fraction | str | int,
    frame_count: int,
    *,
    overrides: Overrides = Overrides(),
    castable: Mapping[str, bool] | None = None,
    weak_reasons: Mapping[str, str] | None = None,
    params: CastingParams = CastingParams(),
    pad_frames: int = 2,
) -> SpeakerPlan:
    """Cast the film (see the module docstring and :mod:`lipsync.speakers.match`)."""
    fps = parse_rate(fps)
    _check_overrides(overrides, voices, turns, tracks)
    rates = {v.sample_rate for v in voices} | {t.sample_rate for t in turns}
    if len(rates) > 1:
        raise ValueError(f"voices and turns must share one sample rate, got {sorted(rates)}")
    activity = {v.name: list(v.speech) for v in voices}
    shared = len(voices) > 1 and len({v.audio for v in voices}) == 1
    casting = cast(shots, tracks, scores, turns, activity, fps, frame_count,
                   overrides=dict(overrides.voices), track_overrides=dict(overrides.tracks),
                   castable=castable, weak_reasons=weak_reasons, shared_audio=shared, params=params)
    by_name = {v.name: v for v in voices}
    track_by_id = {t.id: t for t in tracks}
    drives: list[Drive] = []
    for link in casting.track_links:
        roles = casting.roles_for(link.speaker)
        if not roles:
            continue
        voice = by_name[roles[0]]
        t = track_by_id[link.track_id]
        sl = slice(t.frames.start, t.frames.end)
        want = np.zeros(t.frames.duration, bool)
        for name in roles:  # several voices of one character share its audio (a diarized dialogue stem)
            if by_name[name].audio == voice.audio:
                want |= _mask(by_name[name].speech, voice.sample_rate, fps, frame_count)[sl]
        for r in link.speaking:
            want[r.start - t.frames.start : r.end - t.frames.start] = True
        want = _dilate(want, pad_frames)
        ranges = ranges_of(want, t.frames.start)
        if ranges:
            drives.append(Drive(t.id, t.shot_id, voice.name, voice.audio, ranges))
    characters = []
    for group in casting.characters:
        links = [l for l in casting.track_links if l.speaker == group.id]
        characters.append(Character(group.id, tuple(l.track_id for l in links), tuple(dict.fromkeys(l.shot_id for l in links)),
                                    casting.role_for_speaker(group.id), bool(links), group.speakers))
    notes = []
    for d in casting.dub_links:
        if d.speaker in casting.off_screen:
            notes.append(f"voice {d.role} dubs {d.speaker}, who is never on screen: no face is lip-synced to it")
    return SpeakerPlan(fps, int(frame_count), casting, tuple(voices), tuple(characters), tuple(drives), tuple(turns), tuple(notes))
