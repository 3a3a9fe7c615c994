"""Records, parameters and bundled weights of :mod:`lipsync.speakers.diarize` (shared by its backends)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from dubcore.records import SpeakerTurn

from ..rttm import turn_id

log = logging.getLogger(__name__)

Backend = Literal["auto", "pyannote", "embedded"]
Progress = Callable[[int, int], None]

#: Sample rate every model here works at.
MODEL_SAMPLE_RATE = 16000
#: The pyannote pipeline tried by ``backend="pyannote"`` when none is named.
DEFAULT_PYANNOTE_PIPELINE = "pyannote/speaker-diarization-community-1"


class DiarizationError(RuntimeError):
    """Diarization cannot run: a backend or its weights are missing, or the input is unusable."""


# --------------------------------------------------------------------------- bundled weights


@dataclass(frozen=True)
class BundledWeights:
    """A checkpoint that ships inside an installed wheel (so it works offline).

    Like a :class:`lipsync.store.WeightsEntry`, with the package and the path
    inside it instead of a URL; ``sha256`` and ``size`` are checked on first use.
    """

    name: str
    package: str
    member: str
    sha256: str
    size: int
    license: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def path(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise DiarizationError(
                f"bundled weights {self.name!r}: package {self.package!r} is not installed "
                f"(it ships {self.member}); install it into this environment"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.member
        if not path.is_file():
            raise DiarizationError(f"bundled weights {self.name!r}: {path} is missing from the installed {self.package!r}")
        return path

    def verified_path(self) -> Path:
        return _verified(self)


@functools.lru_cache(maxsize=None)
def _verified(entry: BundledWeights) -> Path:
    path = entry.path()
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise DiarizationError(
            f"bundled weights {entry.name!r}: {path} is {size} bytes, sha256 {digest.hexdigest()}; expected "
            f"{entry.size} bytes, sha256 {entry.sha256} (another version of {entry.package!r}?)"
        )
    return path


#: The weights the ``embedded`` backend uses, by name.
BUNDLED: dict[str, BundledWeights] = {
    "pyannote_segmentation_whisperx": BundledWeights(
        name="pyannote_segmentation_whisperx",
        package="whisperx",
        member="assets/pytorch_model.bin",
        sha256="0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea",
        size=17_719_103,
        license="MIT (pyannote/segmentation, as bundled by whisperx 3.8)",
        meta={
            "architecture": "PyanNet (SincNet + 4x BiLSTM 128 + 2x linear 128)",
            "window_seconds": 5.0,
            "local_speakers": 3,
            "output": "multi-label sigmoid per frame",
            "frame_step_seconds": 0.016875,
            "sample_rate": 16000,
        },
    ),
    "resemblyzer_ge2e": BundledWeights(
        name="resemblyzer_ge2e",
        package="resemblyzer",
        member="pretrained.pt",
        sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        size=17_090_379,
        license="Apache-2.0 (resemblyzer 0.1.4)",
        meta={
            "architecture": "GE2E: 3x LSTM 256 + linear 256 + ReLU, L2-normalised",
            "features": "40 mel bands, 25 ms window, 10 ms hop, power (not log)",
            "partial_frames": 160,
            "embedding_size": 256,
            "sample_rate": 16000,
        },
    ),
}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Diarization:
    """Who speaks when in one file: sample-exact turns at ``sample_rate``."""

    uri: str
    sample_rate: int
    turns: tuple[SpeakerTurn, ...]
    backend: str
    notes: tuple[str, ...] = ()
    #: Length of the audio in samples at ``sample_rate`` (None when unknown).
    num_samples: int | None = None
    #: Parameters and models used (for reports).
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def speakers(self) -> tuple[str, ...]:
        """Speaker ids in order of first speech."""
        seen: dict[str, None] = {}
        for t in self.turns:
            seen.setdefault(t.speaker, None)
        return tuple(seen)

    def speech_samples(self, speaker: str | None = None) -> int:
        """Samples of speech (of ``speaker``; overlapping turns of different speakers count once each)."""
        return sum(t.end_sample - t.start_sample for t in self.turns if speaker is None or t.speaker == speaker)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "backend": self.backend,
            "speakers": list(self.speakers),
            "turns": [t.to_dict() for t in self.turns],
            "notes": list(self.notes),
            "params": self.params,
        }

    def to_annotation(self):  # type: ignore[no-untyped-def]
        """The turns as a ``pyannote.core.Annotation`` (seconds)."""
        from .rttm import to_annotation

        return to_annotation(self.turns, uri=self.uri)


@dataclass(frozen=True)
class DiarizationParams:
    """Parameters of the ``embedded`` backend (see the module docstring for their role)."""

    #: Step of the 5 s segmentation window, as a ratio of it (0.2 = 1 s, 80 % overlap; pyannote
    #: uses 0.1, which costs twice the CPU for a few tenths of a point of DER here).
    segmentation_step: float = 0.2
    #: Threshold on the segmentation scores.
    onset: float = 0.5
    #: Use only the speech of a speaker active alone for its embedding, when there is enough.
    exclude_overlap: bool = True
    #: Shortest speech (s) of a (window, speaker) that gets an embedding.
    min_embedding_seconds: float = 0.5
    #: Speakers active alone for less than this ratio of a window do not train the clusters.
    min_active_ratio: float = 0.2
    #: Each 5 s window is cut into this many equal blocks, embedded and clustered on their own.
    embedding_blocks: int = 2
    #: Agglomerative clustering linkage.
    linkage: str = "ward"
    #: Automatic speaker count (module docstring, step 3): a local speaker with this much speech alone (s)
    #: in a window is a voice the segmentation model hears; the most voices in one window is the
    #: fewest speakers.
    min_local_seconds: float = 0.5
    #: A further speaker needs this much speech of its own (s, distinct audio) ...
    min_speaker_seconds: float = 1.0
    #: ... and the segmentation model's vote: in the real windows where both candidate clusters
    #: speak, and in ``stitch_pairs`` x ``stitch_pairs`` windows made of a stretch of each
    #: (``stitch_seconds`` each), the share where it hears two local speakers exceeds its share for
    #: pairs taken inside the clusters by at least ``split_evidence``.
    stitch_pairs: int = 4
    stitch_seconds: float = 2.4
    split_evidence: float = 0.5
    #: ... or, failing the vote, mean GE2E embeddings at least this far apart (cosine distance),
    #: unless the model heard the two as one local speaker in most real windows with both.
    distinct_voice_distance: float = 0.25
    #: Clusters with fewer embeddings (capped at 10 % of them) are merged into the nearest larger one.
    min_cluster_size: int = 6
    #: Per speaker: fill gaps shorter than this (s), then drop turns shorter than that (s).
    min_duration_off: float = 0.1
    min_duration_on: float = 0.05
    #: Windows per segmentation batch and partials per embedding batch.
    batch_size: int = 32
    embedding_batch_size: int = 64
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _quiet():  # type: ignore[no-untyped-def]
    """Silence the chatter of the libraries (Lightning upgrade notes, prints, deprecations)."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric", "huggingface_hub")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if buf.getvalue().strip():
                log.debug("library output: %s", buf.getvalue().strip())


def _finalise(segments: Sequence[tuple[str, int, int]], rate: int) -> tuple[SpeakerTurn, ...]:
    """Sort, name speakers SPK00.. by first speech, number the turns."""
    ordered = sorted(segments, key=lambda x: (x[1], x[2], x[0]))
    names: dict[str, str] = {}
    for label, _, _ in ordered:
        names.setdefault(label, f"SPK{len(names):02d}")
    return tuple(
        SpeakerTurn(turn_id(i), names[label], a, b, int(rate)) for i, (label, a, b) in enumerate(ordered)
    )
