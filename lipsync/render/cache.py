"""Content-addressed cache of rendered shots: a new run of the same job skips finished shots.

A shot's key is the SHA-256 of everything that decides its pixels:

* the film's bytes (SHA-256 of the file) and the shot's frame range and rate;
* each face track (every box and landmark) and the samples of the audio that
  drives it, and the frame ranges where it speaks;
* the lip-sync parameters that change the picture (crop, blend; not the batch size,
  which only decides speed) and the checkpoint's bytes;
* the segment's encode (the film's delivery codec and quality);
* :data:`RENDER_VERSION`, bumped whenever the renderer's output changes.

A hit is the FFV1 segment and its render summary, stored under the key: the same
bytes a fresh render would write, so a resumed run assembles a film identical to an
uninterrupted one.  Entries are written to a temporary name and moved into place,
summary last, so a crash never leaves an entry that looks complete.

Hashing a film reads it once (about 1 GB/s from local disk); digests are remembered
per (path, size, modification time), in this process and in the cache folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from .job import ShotJob

#: Bump when the renderer's output changes for the same inputs (invalidates every entry).
#: 2: Wav2Lip's training contract (floor mel windows, bilinear face resize, truncated output)
#: and the blend mask that reaches zero inside the crop.
#: 3: segments are encoded in the film's delivery codec (the settings are part of the key) and copied
#: into the film; the blend works on the crop's own pixels.
RENDER_VERSION = 3

_DIGESTS: dict[tuple[str, int, int, str], str] = {}
_DIGESTS_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """``$DUB_CACHE_DIR``, else ``$XDG_CACHE_HOME/dub-film``, else ``~/.cache/dub-film``."""
    if os.environ.get("DUB_CACHE_DIR"):
        return Path(os.environ["DUB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dub-film"


def audio_digest(path: str | Path, memo_dir: Path | None = None) -> str:
    """SHA-256 (hex) of an audio file's samples, rate and channel count (not its header: libsndfile
    stamps float WAVs with the time they were written)."""
    return file_digest(path, memo_dir, samples=True)


def _hash_samples(p: Path) -> str:
    import soundfile as sf

    h = hashlib.sha256()
    with sf.SoundFile(str(p)) as f:
        h.update(f"{f.samplerate}/{f.channels}/{f.frames}/".encode())
        for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            h.update(block.tobytes())
    return h.hexdigest()


def file_digest(path: str | Path, memo_dir: Path | None = None, samples: bool = False) -> str:
    """SHA-256 (hex) of a file's bytes (or its audio samples), remembered per (real path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    ident = (str(p), st.st_size, st.st_mtime_ns, "samples" if samples else "bytes")
    with _DIGESTS_LOCK:
        if ident in _DIGESTS:
            return _DIGESTS[ident]
    memo = None
    if memo_dir is not None:
        memo = memo_dir / "digests" / (hashlib.sha256(repr(ident).encode()).hexdigest()[:32] + ".json")
        if memo.exists():
            try:
                digest = json.loads(memo.read_text())["sha256"]
                with _DIGESTS_LOCK:
                    _DIGESTS[ident] = digest
                return digest
            except (ValueError, KeyError, OSError):
                pass
    if samples:
        digest = _hash_samples(p)
    else:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[ident] = digest
    if memo is not None:
        _write_atomic(memo, json.dumps({"path": ident[0], "size": ident[1], "mtime_ns": ident[2], "sha256": digest}).encode())
    return digest


def _write_atomic(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shot_key(job: ShotJob, checkpoint: str | Path, params: Any = None, memo_dir: Path | None = None,
             generator: str = "auto") -> str:
    """The cache key of one shot render (hex SHA-256); see the module text for what it covers."""
    effective = job.params if job.params is not None else params
    picture_params = None
    if effective is not None:
        picture_params = {k: v for k, v in dataclasses.asdict(effective).items() if k != "batch_size"}
    audio_paths = {t.id: (job.track_audio or {}).get(t.id, job.audio) for t in job.tracks}
    doc = {
        "render_version": RENDER_VERSION,
        "film": file_digest(job.video, memo_dir),
        "fps": [job.fps.numerator, job.fps.denominator],
        "frames": job.frames.to_list(),
        "tracks": [t.to_dict() for t in job.tracks],
        "audio": {tid: audio_digest(path, memo_dir) for tid, path in sorted(audio_paths.items())},
        "speaking": None if job.speaking is None else {
            tid: [r.to_list() for r in ranges] for tid, ranges in sorted(job.speaking.items())},
        "params": picture_params,
        "checkpoint": file_digest(checkpoint, memo_dir),
        "generator": generator,
        "encode": None if job.settings is None else dataclasses.asdict(dataclasses.replace(job.settings, audio_language=None)),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class SegmentCache:
    """Rendered shot segments by key under ``root/segments/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.root / "segments" / key[:2]
        return base / f"{key}.mkv", base / f"{key}.json"

    def take(self, key: str, dst: str | Path) -> None:
        """Move the segment stored under ``key`` to ``dst`` and forget the entry (a render not to be reused)."""
        segment, summary = self._paths(key)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(segment), str(dst))
        summary.unlink(missing_ok=True)

    def get(self, key: str) -> dict[str, Any] | None:
        """The render summary stored under ``key`` (its ``segment`` is the cached file), or None."""
        segment, summary = self._paths(key)
        if not (segment.exists() and summary.exists()):
            return None
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return None
        if data.get("segment_bytes") != segment.stat().st_size:
            return None
        return {**data["render"], "segment": str(segment)}

    def put(self, key: str, segment_file: str | Path, render: dict[str, Any]) -> dict[str, Any]:
        """Store a rendered segment and its summary; returns the summary pointing at the cached file."""
        segment, summary = self._paths(key)
        segment.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{segment.name}.", suffix=".partial", dir=segment.parent)
        os.close(fd)
        try:
            shutil.copyfile(segment_file, tmp)
            os.replace(tmp, segment)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        body = {k: v for k, v in render.items() if k != "segment"}
        _write_atomic(summary, json.dumps({"key": key, "segment_bytes": segment.stat().st_size, "render": body}).encode())
        return {**body, "segment": str(segment)}
