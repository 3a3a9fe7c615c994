"""The training set on disk, and its reader.

Layout of a dataset folder ``DATASET/`` (written by :mod:`lipsync.train.dataset`)::

    dataset.json              versioned (``dub-film/dataset@1``), see below
    clips/<id>.faces.npy      uint8 (N, S, S, 3): face crops, BGR, S = face_size (96), at ``fps`` (25)
    clips/<id>.wav            mono 16-bit PCM at ``sample_rate`` (16000); sample 0 is the start of
                              crop 0 and the file holds exactly N * sample_rate / fps samples

``dataset.json``::

    {"schema": "dub-film/dataset@1", "fps": 25, "sample_rate": 16000, "face_size": 96,
     "clips": [{"id": "...", "film": "...", "character": "...", "split": "train" | "val",
                "frames": N, "faces": "clips/<id>.faces.npy", "audio": "clips/<id>.wav",
                "source": {"shot": "shot-0001", "track": "...", "film_frames": [start, end],
                           "film_fps": [num, den]}}],
     "counts": {...}, "hours": {...}}

A clip is one run of consecutive frames where one tracked face is the active
speaker; crops are resampled to ``fps`` by time when the film's rate differs.

Windows: frame ``i`` of a clip owns audio samples ``[i * spf, i * spf + spf)`` with
``spf = sample_rate / fps`` (640); the lip-sync models read ``mel_step`` (16) mel
columns from :func:`lipsync.audio.mel.mel_window_start` of frame ``i`` (the
contract of :class:`lipsync.models.wav2lip.Wav2Lip`), and the expert reads 5
consecutive frames with the mel window of the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from dubcore.schema import check_versioned

SCHEMA_KIND = "dataset"


@dataclass(frozen=True)
class ClipInfo:
    id: str
    film: str
    character: str
    split: str
    frames: int
    faces: str
    audio: str
    source: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipInfo":
        return cls(str(d["id"]), str(d["film"]), str(d["character"]), str(d["split"]), int(d["frames"]),
                   str(d["faces"]), str(d["audio"]), dict(d.get("source") or {}))


class TrainingSet:
    """Read a dataset folder: clips, their face crops (memory-mapped) and audio."""

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root)
        path = self.root / "dataset.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no dataset here; build one with `dub train dataset FILMS... --out {self.root}`")
        doc = json.loads(path.read_text(encoding="utf-8"))
        check_versioned(doc, SCHEMA_KIND, str(path))
        self.doc = doc
        self.fps = Fraction(doc["fps"])
        self.sample_rate = int(doc["sample_rate"])
        self.face_size = int(doc["face_size"])
        clips = [ClipInfo.from_dict(c) for c in doc["clips"]]
        self.clips = [c for c in clips if split is None or c.split == split]

    @property
    def samples_per_frame(self) -> int:
        spf = Fraction(self.sample_rate) / self.fps
        if spf.denominator != 1:
            raise ValueError(f"{self.root}: {self.sample_rate} Hz is not a whole number of samples per frame at {self.fps} fps")
        return int(spf)

    def faces(self, clip: ClipInfo) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops, memory-mapped (never loads the whole set)."""
        return np.load(self.root / clip.faces, mmap_mode="r")

    def audio(self, clip: ClipInfo) -> np.ndarray:
        """Mono float32 samples at ``sample_rate``; sample 0 is the start of crop 0."""
        return _read_audio(str(self.root / clip.audio), self.sample_rate)

    def mel(self, clip: ClipInfo) -> np.ndarray:
        """(n_mels, T) Wav2Lip mel spectrogram of the clip's audio (cached per clip)."""
        return _mel_of(str(self.root / clip.audio), self.sample_rate)

    def __len__(self) -> int:
        return len(self.clips)


@lru_cache(maxsize=256)
def _read_audio(path: str, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise ValueError(f"{path}: {sr} Hz, the dataset says {sample_rate} Hz")
    return np.ascontiguousarray(data[:, 0])


@lru_cache(maxsize=256)
def _mel_of(path: str, sample_rate: int) -> np.ndarray:
    from lipsync.audio.mel import melspectrogram

    return melspectrogram(_read_audio(path, sample_rate))
