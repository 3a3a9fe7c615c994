"""Content keys of the analysis stages (shots, faces, active speakers, diarization, dub voices, casting).

The review loop runs a job, an operator edits the manifest's ``casting`` section, and
the job runs again: only the casting, and the shots whose drives changed, should be
redone.  Every analysis stage is therefore cached on a key, like the rendered shots
of :mod:`lipsync.render.cache`: the SHA-256 of

* the stage's name and :data:`STAGE_VERSIONS` entry (bumped when the stage's output
  changes for the same inputs);
* the film's bytes (:func:`lipsync.render.cache.file_digest`, remembered per path, size and
  modification time, in this process and in the cache folder) -- or, for the dub
  voices, the bytes of every dub stem;
* the job options that decide the stage's output (:data:`STAGE_OPTIONS`; never the
  options that only decide speed or where files go), the bytes of the weights it
  runs, and the device it runs on where that changes the floats;
* the keys of the stages it reads (faces -> active speakers -> casting ...), so that
  changing any option of a stage invalidates that stage and every one after it;
* for the casting, the manifest's ``casting`` section: editing it changes the key of
  the casting alone.

Nothing here imports Prefect: the tasks in ``tasks/`` use these keys as their
``cache_key_fn`` (persisted results under ``<cache>/prefect-results``), and
:class:`StageFiles` keeps the files a stage writes that later stages read (the dub
voices' WAVs) under ``<cache>/stages/<stage>/<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .render.cache import default_cache_dir, file_digest

#: Bump an entry when that stage's output changes for the same inputs (invalidates it and the stages after it).
STAGE_VERSIONS: dict[str, int] = {
    "shots": 1,
    "faces": 1,
    "asd": 1,
    "diarize-original": 1,
    "dub-voices": 1,
    "cast": 1,
}

#: The job options that decide each stage's output (device and weights are added by the key functions).
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "shots": ("shot_detectors", "min_shot_frames", "content_threshold"),
    # face_batch_size is in: frames are letterboxed per batch, so it can move a box by a rounding.
    "faces": ("face_weights", "face_batch_size", "face_max_size", "face_min_size", "face_min_track_frames"),
    "asd": ("asd_weights",),
    "diarize-original": ("diarization_backend", "diarization_pipeline", "num_speakers"),
    "dub-voices": ("audio_length_policy", "diarization_backend", "diarization_pipeline", "dub_num_speakers"),
    "cast": (),
}


def cache_root(options: Any) -> Path:
    """The job's cache folder: ``options.cache_dir``, else :func:`lipsync.render.cache.default_cache_dir`."""
    return Path(options.cache_dir).expanduser() if getattr(options, "cache_dir", None) else default_cache_dir()


def digest(doc: Any) -> str:
    """SHA-256 (hex) of a JSON document (keys sorted)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _options(stage: str, options: Any) -> dict[str, Any]:
    out = {}
    for name in STAGE_OPTIONS[stage]:
        value = getattr(options, name, None)
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def stage_key(stage: str, *, film: str | None = None, options: Any = None, upstream: Sequence[str] = (),
              extra: Mapping[str, Any] | None = None) -> str:
    """The key of one stage's output: see the module text.  ``film`` is the film's digest."""
    doc = {
        "stage": stage,
        "version": STAGE_VERSIONS[stage],
        "film": film,
        "options": _options(stage, options) if options is not None else None,
        "upstream": list(upstream),
        "extra": dict(extra or {}),
    }
    return f"{stage}-{digest(doc)}"


def weights_digest(name_or_path: str | None, memo_dir: Path | None = None) -> str | None:
    """Digest of the weights file a model-store name or path resolves to; the name itself when it does not
    resolve (the stage then fails on it with the store's own message)."""
    if not name_or_path:
        return None
    try:
        from . import store

        return file_digest(store.resolve(name_or_path), memo_dir)
    except Exception:  # noqa: BLE001 - the task reports the missing or bad weights itself
        return f"unresolved:{name_or_path}"


def film_digest(film: str | os.PathLike[str], memo_dir: Path | None = None) -> str:
    return file_digest(film, memo_dir)


# --------------------------------------------------------------------------- one key per stage


def shots_key(film: str, options: Any) -> str:
    return stage_key("shots", film=film, options=options)


def faces_key(film: str, shot: Any, options: Any, device: str, memo_dir: Path | None = None,
              params: Mapping[str, Any] | None = None) -> str:
    """One shot's face tracks: the film, the shot (id, frames, rate), the detector and tracker settings
    (``params``: the tracking parameters in full, defaults included, so a new default is a new key)."""
    return stage_key("faces", film=film, options=options,
                     extra={"shot": shot.to_dict(), "device": device, "params": dict(params or {}),
                            "weights": weights_digest(options.face_weights, memo_dir)})


def asd_key(film: str, tracks: Any, options: Any, device: str, memo_dir: Path | None = None, params: Any = None) -> str:
    """Active-speaker scores of every track: the film (its picture and soundtrack), the face tracks (their
    content: :func:`content_digest`), the Light-ASD weights."""
    return stage_key("asd", film=film, options=options, upstream=[content_digest(list(tracks))],
                     extra={"device": device, "weights": weights_digest(options.asd_weights, memo_dir),
                            "params": content_digest(params)})


def _diarization_env(options: Any) -> dict[str, Any]:
    # 'auto' picks pyannote when a pipeline is named or a token is set: which one ran is part of the output
    return {"hf_token": bool(os.environ.get("HF_TOKEN")) if options.diarization_backend != "embedded" else None}


def diarize_key(audio: str, options: Any, uri: str) -> str:
    """Diarization of the original: the digest of its 16 kHz soundtrack (:func:`content_digest`), the options."""
    return stage_key("diarize-original", film=audio, options=options, extra={"uri": uri, **_diarization_env(options)})


def voices_key(film: str, stems: Sequence[Any], options: Any, memo_dir: Path | None = None) -> str:
    """The dub voices: every stem's bytes, role and gain, and the picture's length and rate (the film)."""
    return stage_key("dub-voices", film=film, options=options,
                     extra={"stems": [{"role": s.role, "gain_db": float(s.gain_db), "bytes": file_digest(s.path, memo_dir)}
                                      for s in stems],
                            **_diarization_env(options)})


def cast_key(inputs: Mapping[str, Any], casting: Any, options: Any = None) -> str:
    """The casting: the content of everything it reads (shots, tracks, active-speaker scores, both
    diarizations, the voices -- whose audio lives in the voices' own cache entry, named by its key),
    the manifest's ``casting`` section and the job options (but where files go)."""
    section = casting.model_dump(mode="json") if hasattr(casting, "model_dump") else casting
    opts = options.model_dump(mode="json", exclude={"cache", "cache_dir"}) if hasattr(options, "model_dump") else options
    return stage_key("cast", upstream=[content_digest(inputs)], extra={"casting": section, "options": opts})


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a structure of records: dataclasses, pydantic models, mappings, sequences, numpy
    arrays (their bytes, dtype and shape), fractions, paths and scalars.  Anything else is taken by its
    ``repr`` (an object whose repr changes every run simply never hits the cache)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:  # noqa: C901 - one branch per kind
    import dataclasses
    from fractions import Fraction

    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"<{type(obj).__name__}:{obj!r}>".encode())
    elif isinstance(obj, (Fraction, Path)):
        h.update(f"<{type(obj).__name__}:{obj}>".encode())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, np.ndarray):
        h.update(f"<ndarray:{obj.dtype.str}:{obj.shape}>".encode())
        flat = obj.reshape(-1) if obj.flags.c_contiguous else np.ascontiguousarray(obj).reshape(-1)
        step = max(1, (1 << 24) // max(1, flat.itemsize))
        for i in range(0, len(flat), step):  # memory maps are read in blocks, never all at once
            h.update(np.ascontiguousarray(flat[i : i + step]).view(np.uint8).data)
    elif isinstance(obj, dict) or hasattr(obj, "items") and callable(obj.items):
        h.update(b"<map>")
        for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0])):
            _feed(h, k)
            _feed(h, v)
        h.update(b"</map>")
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(b"<seq>")
        for v in items:
            _feed(h, v)
        h.update(b"</seq>")
    elif hasattr(obj, "model_dump"):
        h.update(f"<model:{type(obj).__name__}>".encode())
        _feed(h, obj.model_dump(mode="json"))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"<{type(obj).__qualname__}>".encode())
        for f in dataclasses.fields(obj):
            _feed(h, f.name)
            _feed(h, getattr(obj, f.name))
    else:
        h.update(f"<repr:{type(obj).__qualname__}:{obj!r}>".encode())


# --------------------------------------------------------------------------- files of a stage


class StageFiles:
    """Files a stage writes for later stages (or later runs), kept under ``root/stages/<stage>/<key>/``.

    :meth:`build` gives a fresh temporary folder beside the final one; :meth:`commit`
    moves it into place in one rename, so a crash never leaves a folder that looks
    complete."""

    def __init__(self, root: str | os.PathLike[str], stage: str, key: str) -> None:
        self.dir = Path(root) / "stages" / stage / key

    def present(self, names: Iterable[str]) -> bool:
        return self.dir.is_dir() and all((self.dir / n).is_file() for n in names)

    def build(self) -> Path:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{self.dir.name}.", suffix=".partial", dir=self.dir.parent))

    def commit(self, tmp: Path) -> Path:
        if self.dir.exists():  # an earlier run's entry (same key: same content) or a broken one
            shutil.rmtree(self.dir, ignore_errors=True)
        os.replace(tmp, self.dir)
        return self.dir
