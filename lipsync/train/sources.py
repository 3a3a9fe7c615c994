"""The films a training set is built from (:class:`FilmSource`), the character of each clip and the
train / val split (:mod:`lipsync.train.dataset` builds the set).

A clip's character is, by priority, ``FilmSource.tracks[track_id]``,
``FilmSource.sides["left"|"right"]`` (by the track's median box centre
against the frame's middle), ``FilmSource.character``, else the film's
name: without names every face of a film is one group, so nobody seen in
training can reappear in validation through another shot of the same film.
The split is decided per *character*, so a character is never in both:
``val`` when it is in ``val_characters``, or appears in any film of
``val_films``, or the first 32 bits of ``sha1(character)`` fall below
``val_fraction`` of the range; ``train`` otherwise.  (A character seen in a
val film is val in every film.)

Bad input (a missing film, two films of one name, a bad ``val_films`` name) is found
here, before anything is written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dubcore.records import FaceTrack

__all__ = ["FilmSource", "character_of", "character_split", "name_sources"]


@dataclass(frozen=True)
class FilmSource:
    """One film to take clips from.

    ``path``: a local path or a storage URI (``s3://...``).  ``name``: the film's
    name in the dataset (default: the file stem; must be unique).  Character
    names (see the module docstring): ``tracks`` by track id, ``sides`` by
    ``"left"``/``"right"`` half of the picture, or one ``character`` for the
    whole film.
    """

    path: str | os.PathLike[str]
    name: str | None = None
    character: str | None = None
    sides: Mapping[str, str] | None = None
    tracks: Mapping[str, str] | None = None

    @property
    def uri(self) -> str:
        return os.fspath(self.path)

    @property
    def film_name(self) -> str:
        if self.name:
            return self.name
        uri = self.uri.rstrip("/")
        return Path(uri.split("://", 1)[-1]).stem

    def __post_init__(self) -> None:
        if self.sides is not None and not set(self.sides) <= {"left", "right"}:
            raise ValueError(f"{self.uri}: sides must be keyed 'left'/'right', got {sorted(self.sides)}")


# --------------------------------------------------------------------------- characters and splits


def _side(track: FaceTrack, width: int) -> str:
    cx = float(np.median([(o.box[0] + o.box[2]) / 2 for o in track.observations]))
    return "left" if cx < width / 2 else "right"


def character_of(film: FilmSource, track: FaceTrack, width: int) -> str:
    if film.tracks and track.id in film.tracks:
        return film.tracks[track.id]
    if film.sides:
        side = _side(track, width)
        if side in film.sides:
            return film.sides[side]
    if film.character:
        return film.character
    return film.film_name


def name_sources(films: Sequence[str | os.PathLike[str]], names: Mapping[str, Mapping[str, Any]] | None,
                 where: str = "names") -> list[FilmSource]:
    """``FilmSource`` per film with its character names from ``names`` (keyed by film name, each
    ``{"character": N} | {"sides": {...}} | {"tracks": {...}}``); unknown films or keys are refused."""
    table = dict(names or {})
    sources = [FilmSource(f) for f in films]
    known = {s.film_name for s in sources}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: films {unknown} are not among those given ({sorted(known)})")
    out = []
    for s in sources:
        spec = table.get(s.film_name) or {}
        extra = sorted(set(spec) - {"character", "sides", "tracks"})
        if extra:
            raise ValueError(f"{where}: film {s.film_name!r} has unknown keys {extra}; use character, sides or tracks")
        out.append(FilmSource(s.path, character=spec.get("character"), sides=spec.get("sides"), tracks=spec.get("tracks")))
    return out


def _hash_fraction(character: str) -> float:
    return int(hashlib.sha1(character.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def character_split(clips: Sequence[Mapping[str, Any]], val_films: Iterable[str] = (), val_characters: Iterable[str] = (),
                    val_fraction: float = 0.0) -> dict[str, str]:
    """``{character: "train" | "val"}`` (see the module docstring); ``clips`` need ``film`` and ``character``."""
    vf, vc = set(val_films), set(val_characters)
    val = {c["character"] for c in clips if c["film"] in vf} | vc
    return {c["character"]: "val" if (c["character"] in val or _hash_fraction(c["character"]) < val_fraction) else "train"
            for c in clips}


# --------------------------------------------------------------------------- input checks


def _check_films(films: Sequence[FilmSource]) -> None:
    """Refuse bad input before anything is written."""
    from dubcore.storage import open_storage, scheme_of

    if not films:
        raise ValueError("no films given")
    seen: dict[str, str] = {}
    for f in films:
        uri = f.uri
        if scheme_of(uri) == "file":
            p = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"{uri}: no such film")
        elif not open_storage(uri).exists(uri):
            raise FileNotFoundError(f"{uri}: no such film")
        name = f.film_name
        if name in seen:
            raise ValueError(f"two films named {name!r} ({seen[name]} and {uri}); give FilmSource.name")
        seen[name] = uri


def _resolve_val_films(films: Sequence[FilmSource], val_films: Iterable[str | os.PathLike[str]]) -> set[str]:
    names = set()
    for v in val_films:
        key = os.fspath(v)
        hits = [f.film_name for f in films if key in (f.film_name, f.uri) or
                (Path(key).exists() and Path(f.uri).exists() and Path(key).resolve() == Path(f.uri).resolve())]
        if not hits:
            raise ValueError(f"validation film {key!r} is not one of the films given ({', '.join(f.film_name for f in films)})")
        names.update(hits)
    return names
