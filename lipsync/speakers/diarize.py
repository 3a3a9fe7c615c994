"""Speaker diarization: who speaks when, as sample-exact :class:`SpeakerTurn` s.

Two backends:

``pyannote``
    A full ``pyannote.audio`` pipeline, ``Pipeline.from_pretrained(name_or_path,
    token=...)``: a hub name (default ``pyannote/speaker-diarization-community-1``,
    gated: needs a token and the network) or a local directory / ``config.yaml``
    whose weights are on disk.

``embedded`` (runs anywhere, offline)
    Built only from weights that ship *inside* installed wheels (see
    :data:`BUNDLED`):

    1. **Local segmentation.**  The pyannote/segmentation model that the whisperx
       wheel bundles (``whisperx/assets/pytorch_model.bin``; PyanNet, 5 s windows,
       up to 3 speakers per window, multi-label sigmoid scores, one frame every
       16.875 ms) slides over the 16 kHz audio with a step of
       ``segmentation_step`` x 5 s.  Scores are binarised at ``onset``; the number
       of simultaneous speakers per frame (0, 1, 2 ...) is the rounded average of
       the per-window counts (``pyannote``'s ``speaker_count``), so **overlapped
       speech keeps both speakers**.
    2. **Embeddings.**  Every window is cut into ``embedding_blocks`` equal parts
       (2 x 2.5 s).  For every (window, local speaker, block) the 40-band mel
       frames (10 ms) where that speaker is active -- alone, when there is at
       least ``min_embedding_seconds`` of such speech (``exclude_overlap``) -- are
       put end to end, loudness-normalised like resemblyzer's ``preprocess_wav``
       (-30 dBFS, increase only) and embedded with resemblyzer's GE2E
       ``VoiceEncoder`` (its wheel ships ``pretrained.pt``): mean of the
       embeddings of 1.6 s partials (hop 0.8 s), or of the whole stretch when
       shorter.  Blocks matter: the segmentation model sometimes keeps two
       similar voices as one local speaker for a whole window (AMI dev00); a
       block can still go to another cluster than its neighbour.
    3. **Clustering** (:func:`cluster_embeddings`).  Ward agglomerative
       clustering of the embeddings of speakers active alone for at least
       ``min_active_ratio`` of their block.  With ``num_speakers`` the tree is cut
       into that many large clusters; otherwise it is split as long as every two
       speakers' mean embeddings stay ``threshold`` apart (cosine distance),
       within ``min_speakers`` / ``max_speakers``.  Clusters smaller than
       ``min_cluster_size`` join the nearest large one.  Every embedding then goes
       to its nearest centroid, two speakers of one block never to the same one.
    4. **Turns.**  Per frame, the ``count`` most active clusters speak
       (``pyannote``'s reconstruction).  Runs of frames become turns whose bounds
       lie half-way between frame centres, converted to samples of the caller's
       rate (nearest sample); per speaker, gaps shorter than ``min_duration_off``
       are filled and turns shorter than ``min_duration_on`` dropped.

Speakers are named ``SPK00``, ``SPK01`` ... in order of first speech; turns are
sorted by start and named ``turn-0001`` ...

Defaults were chosen on the pyannote sample call, the AMI "debug" excerpt and
a few derived clips (single-speaker cuts, the two concatenated, GRID clips);
``bench/bench_diarize.py`` prints the figures.  Limits: speech activity and
overlap come from a strong model, but the speaker embeddings are a small GE2E
LSTM: with ``num_speakers`` given the DER is close to what pyannote's own
pipelines reach on these files, while the *automatic* speaker count is fragile
(it over-splits some single far-field speakers and may add a small third
speaker to a two-person call).  Pass ``num_speakers`` (or bounds) when the cast
is known, or use the ``pyannote`` backend where its weights are available.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from dubcore.records import SpeakerTurn

from .rttm import turn_id

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
    #: Agglomerative clustering: linkage method, and the smallest cosine distance between
    #: two speakers' mean embeddings (the automatic speaker count stops splitting below it).
    linkage: str = "ward"
    threshold: float = 0.14
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


# --------------------------------------------------------------------------- entry point


def diarize(
    audio_path_or_array: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    backend: Backend = "auto",
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    pyannote_pipeline: str | os.PathLike[str] | None = None,
    token: str | None = None,
    progress: Progress | None = None,
    params: DiarizationParams | None = None,
    uri: str | None = None,
) -> Diarization:
    """Diarize one recording.

    ``audio_path_or_array``: a media file (any audio or video ffmpeg reads; its
    first audio stream, downmixed, decoded at 16 kHz), or a float array of
    samples ``(n,)`` or ``(n, channels)`` (downmixed) at ``sample_rate``.

    ``sample_rate``: the rate of the array (required for an array); for a file,
    the rate the turns are expressed in (default 16000: the file is analysed at
    16 kHz whatever its rate, and the bounds converted to this rate).

    ``backend``: ``"embedded"`` (offline, weights inside installed wheels),
    ``"pyannote"`` (``pyannote_pipeline``: hub name + ``token``, or a local
    path; errors if it cannot load) or ``"auto"``: pyannote when a pipeline is
    named, a token is given (or ``HF_TOKEN`` is set), and it loads; else the
    embedded backend, with a note saying why.

    ``num_speakers`` fixes the number of speakers; ``min_speakers`` /
    ``max_speakers`` bound it.  ``progress(done, total)`` is called as windows
    and embeddings are processed.  A recording with no speech gives no turns.
    """
    if backend not in ("auto", "pyannote", "embedded"):
        raise ValueError(f"backend must be 'auto', 'pyannote' or 'embedded', got {backend!r}")
    _check_counts(num_speakers, min_speakers, max_speakers)
    waveform, out_rate, uri, num_samples = _load_input(audio_path_or_array, sample_rate, uri)

    notes: list[str] = []
    if backend in ("auto", "pyannote"):
        token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_TOKEN")
        if backend == "auto" and pyannote_pipeline is None and not token:
            notes.append(
                "pyannote backend not tried: no pipeline given (pyannote_pipeline = local path, or hub name with a "
                "token / HF_TOKEN); used the embedded backend"
            )
        else:
            name = str(pyannote_pipeline or DEFAULT_PYANNOTE_PIPELINE)
            try:
                pipeline = _load_pyannote_pipeline(name, token)
            except DiarizationError as exc:
                if backend == "pyannote":
                    raise
                notes.append(f"pyannote backend unavailable ({exc}); used the embedded backend")
                log.warning(notes[-1])
            else:
                turns = _run_pyannote(pipeline, waveform, out_rate, num_samples, num_speakers, min_speakers, max_speakers, progress)
                return Diarization(uri, out_rate, turns, "pyannote", tuple(notes), num_samples, {"pipeline": name})

    params = params or DiarizationParams()
    turns, more_notes = _run_embedded(waveform, out_rate, num_samples, params, num_speakers, min_speakers, max_speakers, progress)
    info = {"embedded": params.to_dict(), "weights": sorted(BUNDLED)}
    return Diarization(uri, out_rate, turns, "embedded", tuple(notes + more_notes), num_samples, info)


def _check_counts(num: int | None, lo: int | None, hi: int | None) -> None:
    for name, value in (("num_speakers", num), ("min_speakers", lo), ("max_speakers", hi)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num is None and lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_speakers ({lo}) is larger than max_speakers ({hi})")


def _load_input(
    source: str | os.PathLike[str] | np.ndarray, sample_rate: int | None, uri: str | None
) -> tuple[np.ndarray, int, str, int]:
    """(16 kHz mono float32 waveform, output rate, uri, length at output rate)."""
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required when diarizing an array of samples")
        data = np.asarray(source, dtype=np.float32)
        if data.ndim == 2:
            data = data.mean(axis=1, dtype=np.float32)
        elif data.ndim != 1:
            raise ValueError(f"audio array must be (samples,) or (samples, channels), got shape {data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError("audio array holds NaN or infinite samples")
        rate = int(sample_rate)
        wave = _resample(data, rate, MODEL_SAMPLE_RATE)
        return wave, rate, uri or "audio", len(data)

    from lipsync.media.audio import load_audio

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rate = int(sample_rate or MODEL_SAMPLE_RATE)
    wave = np.ascontiguousarray(load_audio(path, MODEL_SAMPLE_RATE, mono=True), dtype=np.float32)
    num_samples = round(len(wave) * rate / MODEL_SAMPLE_RATE)
    return wave, rate, uri or path.stem, num_samples


def _resample(data: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return np.ascontiguousarray(data, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(src, dst)
    return resample_poly(data, dst // g, src // g).astype(np.float32)


# --------------------------------------------------------------------------- pyannote backend


def _load_pyannote_pipeline(name: str, token: str | None):  # type: ignore[no-untyped-def]
    """``Pipeline.from_pretrained``; any failure becomes a :class:`DiarizationError` that says why."""
    try:
        from pyannote.audio import Pipeline
    except Exception as exc:  # pragma: no cover - pyannote.audio is a dependency
        raise DiarizationError(f"pyannote.audio cannot be imported: {exc}") from exc
    local = Path(name).expanduser()
    if not local.exists() and (name.startswith((".", "/", "~")) or name.endswith((".yaml", ".yml"))):
        raise DiarizationError(f"pyannote pipeline {name}: no such local path")
    if not local.exists() and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") and not token:
        raise DiarizationError(f"pyannote pipeline {name!r}: HF_HUB_OFFLINE is set and the pipeline is not local")
    try:
        with _quiet():
            pipeline = Pipeline.from_pretrained(str(local) if local.exists() else name, token=token)
    except Exception as exc:
        raise DiarizationError(f"pyannote pipeline {name!r} could not be loaded: {type(exc).__name__}: {_first_line(exc)}") from exc
    if pipeline is None:
        raise DiarizationError(
            f"pyannote pipeline {name!r} could not be loaded (gated or not downloadable: accept its conditions on the "
            "hub and give a token, or give a local path)"
        )
    return pipeline


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _run_pyannote(
    pipeline, waveform, out_rate, num_samples, num_speakers, min_speakers, max_speakers, progress
) -> tuple[SpeakerTurn, ...]:  # type: ignore[no-untyped-def]
    import torch

    def hook(step_name, step_artefact, file=None, total=None, completed=None):  # type: ignore[no-untyped-def]
        if progress is not None and total:
            progress(int(completed or 0), int(total))

    file = {"waveform": torch.from_numpy(waveform)[None], "sample_rate": MODEL_SAMPLE_RATE, "uri": "file"}
    kwargs = {k: v for k, v in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)) if v}
    with _quiet():
        output = pipeline(file, hook=hook, **kwargs)
    annotation = getattr(output, "speaker_diarization", output)
    segments = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        s0 = min(num_samples, max(0, round(segment.start * out_rate)))
        s1 = min(num_samples, max(0, round(segment.end * out_rate)))
        if s1 > s0:
            segments.append((str(label), s0, s1))
    return _finalise(segments, out_rate)


# --------------------------------------------------------------------------- embedded backend


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


@functools.lru_cache(maxsize=4)
def load_segmentation_model(device: str = "cpu"):  # type: ignore[no-untyped-def]
    """The bundled pyannote segmentation model (eval mode)."""
    path = BUNDLED["pyannote_segmentation_whisperx"].verified_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyannote.audio import Model  # imported first: importing Lightning resets its log levels
    with _quiet():
        model = Model.from_pretrained(str(path))
    if model is None:  # pragma: no cover
        raise DiarizationError(f"{path}: pyannote could not load the segmentation model")
    spec = model.specifications
    if getattr(spec, "powerset", False) or float(spec.duration) <= 0:
        raise DiarizationError(f"{path}: unexpected segmentation model (powerset={spec.powerset}, duration={spec.duration})")
    model.eval()
    return model.to(device)


@functools.lru_cache(maxsize=4)
def load_voice_encoder(device: str = "cpu"):  # type: ignore[no-untyped-def]
    """resemblyzer's bundled GE2E voice encoder (eval mode)."""
    path = BUNDLED["resemblyzer_ge2e"].verified_path()
    with _quiet():
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise DiarizationError(f"resemblyzer cannot be imported ({exc}); install resemblyzer==0.1.4") from exc
    with _quiet():
        encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=path)
    encoder.eval()
    return encoder


def _run_embedded(
    waveform: np.ndarray,
    out_rate: int,
    num_samples: int,
    params: DiarizationParams,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    progress: Progress | None,
) -> tuple[tuple[SpeakerTurn, ...], list[str]]:
    notes: list[str] = []
    if len(waveform) == 0 or not np.any(waveform):
        return (), ["no audio signal (empty or digital silence): no turns"]
    started = time.perf_counter()
    model = load_segmentation_model(params.device)
    seg = _segment(model, waveform, params, progress)
    count, binarized = _count_speakers(model, seg, params)
    if float(np.nanmax(count.data, initial=0.0)) == 0.0:
        return (), ["no speech detected: no turns"]

    encoder = load_voice_encoder(params.device)
    seg_b, bin_b = _split_blocks(seg, binarized, params.embedding_blocks)
    embeddings = _embed(encoder, waveform, bin_b, model, params, progress)
    hard_clusters, cluster_notes = _cluster(embeddings, bin_b, params, num_speakers, min_speakers, max_speakers)
    notes += cluster_notes
    # Never more simultaneous speakers than speakers found (pyannote would pad with a phantom one).
    found = max(1, int(hard_clusters.max()) + 1)
    count.data = np.minimum(count.data, found).astype(np.int8)
    discrete = _reconstruct(seg_b, hard_clusters, count)
    segments = _frames_to_segments(discrete, out_rate, num_samples)
    segments = _smooth(segments, out_rate, params)
    turns = _finalise(segments, out_rate)
    log.info("diarized %.1f s of audio in %.1f s: %d turns, %d speakers", len(waveform) / MODEL_SAMPLE_RATE,
             time.perf_counter() - started, len(turns), len({t.speaker for t in turns}))
    return turns, notes


def _segment(model, waveform: np.ndarray, params: DiarizationParams, progress: Progress | None):  # type: ignore[no-untyped-def]
    """Raw segmentation scores: SlidingWindowFeature (chunks, frames, local speakers)."""
    import torch
    from pyannote.audio import Inference

    duration = float(model.specifications.duration)
    inference = Inference(
        model,
        duration=duration,
        step=params.segmentation_step * duration,
        skip_aggregation=True,
        batch_size=params.batch_size,
        device=torch.device(params.device),
    )

    def hook(completed=None, total=None, **_):  # type: ignore[no-untyped-def]
        if progress is not None and total:
            progress(min(int(completed or 0), int(total)), int(total) * 2)

    with _quiet(), torch.inference_mode():
        return inference({"waveform": torch.from_numpy(waveform)[None], "sample_rate": MODEL_SAMPLE_RATE}, hook=hook)


def _count_speakers(model, seg, params: DiarizationParams):  # type: ignore[no-untyped-def]
    from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
    from pyannote.audio.utils.signal import binarize

    binarized = binarize(seg, onset=params.onset, initial_state=False)
    count = SpeakerDiarizationMixin.speaker_count(binarized, model.receptive_field, warm_up=(0.0, 0.0))
    return count, binarized


def _embed(encoder, waveform, binarized, model, params: DiarizationParams, progress: Progress | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Embeddings (chunks, local speakers, 256); NaN where a speaker has too little speech."""
    import torch
    from resemblyzer import hparams as rz

    hop = MODEL_SAMPLE_RATE * rz.mel_window_step // 1000  # 160 samples = 10 ms
    mel, power = _mel_frames(waveform, hop)
    num_mel = len(mel)
    data = binarized.data  # (chunks, frames, speakers) 0/1
    num_chunks, num_frames, num_local = data.shape
    chunks = binarized.sliding_window
    frames = model.receptive_field
    min_mel = max(1, int(round(params.min_embedding_seconds * MODEL_SAMPLE_RATE / hop)))

    # Which segmentation frame each 10 ms mel frame of a window falls in (same for every window).
    window_mel = int(round(chunks.duration * MODEL_SAMPLE_RATE / hop))
    centres = np.arange(window_mel) * hop / MODEL_SAMPLE_RATE
    frame_of = np.clip(np.rint((centres - frames.start - frames.duration / 2) / frames.step), 0, num_frames - 1).astype(int)

    jobs: list[tuple[int, int, np.ndarray]] = []  # (chunk, speaker, mel frame indices)
    for c in range(num_chunks):
        first = int(round(chunks[c].start * MODEL_SAMPLE_RATE / hop))
        idx = first + np.arange(window_mel)
        valid = idx < num_mel
        masks = data[c][frame_of]  # (window_mel, speakers)
        clean = masks.sum(axis=1) == 1
        for s in range(num_local):
            active = masks[:, s] > 0
            if params.exclude_overlap and np.count_nonzero(active & clean & valid) >= min_mel:
                active = active & clean
            active &= valid
            if np.count_nonzero(active) >= min_mel:
                jobs.append((c, s, idx[active]))

    embeddings = np.full((num_chunks, num_local, rz.model_embedding_size), np.nan, dtype=np.float32)
    # Loudness normalisation as resemblyzer.preprocess_wav: to -30 dBFS, never quieter.
    partials: list[np.ndarray] = []
    owner: list[int] = []
    for j, (_, _, sel) in enumerate(jobs):
        dbfs = 10 * np.log10(max(float(power[sel].mean()), 1e-12))
        gain = 10 ** (max(0.0, rz.audio_norm_target_dBFS - dbfs) / 10)  # power domain
        feats = mel[sel] * np.float32(gain)
        n = len(feats)
        size = rz.partials_n_frames
        if n <= size:
            starts = [0]
        else:
            step = size // 2
            starts = list(range(0, n - size + 1, step))
            if starts[-1] != n - size:
                starts.append(n - size)
        for st in starts:
            partials.append(feats[st : st + size])
            owner.append(j)

    total = len(partials)
    done = 0
    out = np.zeros((total, rz.model_embedding_size), dtype=np.float32)
    order = sorted(range(total), key=lambda i: -len(partials[i]))  # group equal lengths (most are full partials)
    with torch.inference_mode():
        i = 0
        while i < total:
            length = len(partials[order[i]])
            batch_ids = []
            while i < total and len(batch_ids) < params.embedding_batch_size and len(partials[order[i]]) == length:
                batch_ids.append(order[i])
                i += 1
            batch = torch.from_numpy(np.stack([partials[k] for k in batch_ids])).to(params.device)
            out[batch_ids] = encoder(batch).cpu().numpy()
            done += len(batch_ids)
            if progress is not None:
                progress(num_chunks + (num_chunks * done) // total, 2 * num_chunks)
    owner_arr = np.asarray(owner)
    for j, (c, s, _) in enumerate(jobs):
        vecs = out[owner_arr == j]
        mean = vecs.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            embeddings[c, s] = mean / norm
    if progress is not None:
        progress(2 * num_chunks, 2 * num_chunks)
    return embeddings


def _mel_frames(waveform: np.ndarray, hop: int, block_frames: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """resemblyzer's mel features (power, 40 bands, 25 ms / 10 ms) of the whole file, computed in blocks,
    and the mean power of the 10 ms around each frame centre."""
    import librosa
    from resemblyzer import hparams as rz

    n_fft = MODEL_SAMPLE_RATE * rz.mel_window_length // 1000  # 400
    num = 1 + len(waveform) // hop  # librosa center=True frame count
    padded = np.pad(waveform, (n_fft // 2, n_fft // 2))
    mels = []
    for f0 in range(0, num, block_frames):
        f1 = min(num, f0 + block_frames)
        seg = padded[f0 * hop : (f1 - 1) * hop + n_fft]
        m = librosa.feature.melspectrogram(y=seg, sr=MODEL_SAMPLE_RATE, n_fft=n_fft, hop_length=hop, n_mels=rz.mel_n_channels, center=False)
        mels.append(m.T.astype(np.float32))
    mel = np.concatenate(mels)[:num]
    sq = np.pad(waveform.astype(np.float64) ** 2, (hop // 2, hop))
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    starts = np.arange(num) * hop
    power = (csum[starts + hop] - csum[starts]) / hop
    return mel, power.astype(np.float32)


def _split_blocks(seg, binarized, blocks: int):  # type: ignore[no-untyped-def]
    """(chunks, frames, S) -> (chunks, frames, S * blocks): column ``s * blocks + b`` is local
    speaker ``s`` restricted to the ``b``-th equal part of the window (zero elsewhere)."""
    from pyannote.core import SlidingWindowFeature

    if blocks <= 1:
        return seg, binarized
    num_chunks, num_frames, num_local = seg.data.shape
    edges = np.linspace(0, num_frames, blocks + 1).round().astype(int)
    out_seg = np.zeros((num_chunks, num_frames, num_local * blocks), dtype=np.float32)
    out_bin = np.zeros_like(out_seg)
    for s in range(num_local):
        for b in range(blocks):
            lo, hi = edges[b], edges[b + 1]
            out_seg[:, lo:hi, s * blocks + b] = np.nan_to_num(seg.data[:, lo:hi, s])
            out_bin[:, lo:hi, s * blocks + b] = binarized.data[:, lo:hi, s]
    return SlidingWindowFeature(out_seg, seg.sliding_window), SlidingWindowFeature(out_bin, binarized.sliding_window)


def cluster_embeddings(
    X: np.ndarray,
    *,
    threshold: float,
    linkage_method: str = "ward",
    min_cluster_size: int = 3,
    num_clusters: int | None = None,
    min_clusters: int | None = None,
    max_clusters: int | None = None,
    most_clusters: int = 50,
) -> np.ndarray:
    """Agglomerative clustering of unit-norm embeddings ``X`` (n, d) -> labels 0..K-1.

    The dendrogram (``linkage_method``; ward, centroid and median on the Euclidean
    distance of the unit vectors, the others on cosine distance) is cut into K
    *large* clusters; clusters with fewer than ``min_cluster_size`` members (capped
    at 10 % of ``n``) are outliers that join the large cluster with the nearest
    centroid.  K is ``num_clusters`` when given; otherwise the largest K (within
    ``[min_clusters, max_clusters]``, at most ``most_clusters``) reached by
    splitting further while every two cluster centroids stay at least
    ``threshold`` apart in cosine distance -- a criterion that does not depend on
    how many embeddings there are (ward merge heights do).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import cdist, pdist

    n = len(X)
    if n <= 1:
        return np.zeros((n,), dtype=int)
    euclid = linkage_method in ("centroid", "median", "ward")
    Z = linkage(X, method=linkage_method, metric="euclidean" if euclid else "cosine")
    smallest = max(1, min(int(min_cluster_size), round(0.1 * n)))

    def split(k: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels with the k largest clusters of the first cut that has k large ones (or fewer at the end)."""
        for count in range(k, n + 1):
            labels = fcluster(Z, count, criterion="maxclust")
            ids, sizes = np.unique(labels, return_counts=True)
            order = np.argsort(-sizes, kind="stable")
            ids, sizes = ids[order], sizes[order]
            if np.count_nonzero(sizes >= smallest) >= k:
                return labels, ids[:k]
        # Never k clusters that large: the plain k-cluster cut, outliers included.
        labels = fcluster(Z, k, criterion="maxclust")
        return labels, np.unique(labels)

    def centroids(labels: np.ndarray, large: np.ndarray) -> np.ndarray:
        return np.stack([X[labels == k].mean(axis=0) for k in large])

    lo = max(1, min(n, num_clusters or min_clusters or 1))
    hi = max(lo, min(n, num_clusters or max_clusters or most_clusters))
    labels, large = split(lo)
    if num_clusters is None:
        k = len(large)
        while k < hi:
            more_labels, more_large = split(k + 1)
            if len(more_large) <= k or float(pdist(centroids(more_labels, more_large), metric="cosine").min()) < threshold:
                break
            labels, large, k = more_labels, more_large, len(more_large)
    cents = centroids(labels, large)
    out = np.empty((n,), dtype=int)
    for i, k in enumerate(large):
        out[labels == k] = i
    others = ~np.isin(labels, large)
    if np.any(others):
        out[others] = np.argmin(cdist(X[others], cents, metric="cosine"), axis=1)
    return out


def _cluster(embeddings, binarized, params: DiarizationParams, num_speakers, min_speakers, max_speakers):  # type: ignore[no-untyped-def]
    """Cluster the (window, local speaker, block) embeddings; returns hard clusters (chunks, columns), -2 = none."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    notes: list[str] = []
    num_chunks, num_columns, dim = embeddings.shape
    blocks = max(1, params.embedding_blocks)
    num_local = num_columns // blocks
    data = binarized.data
    num_frames = data.shape[1]
    active = data.sum(axis=1) > 0
    valid = ~np.any(np.isnan(embeddings), axis=2)
    single = data.sum(axis=2, keepdims=True) == 1
    clean = (data * single).sum(axis=1)
    train = valid & (clean >= params.min_active_ratio * num_frames / blocks)
    if np.count_nonzero(train) < 2:
        train = valid  # little clean speech: use every embedding
    X = embeddings[train].astype(np.float64)
    hard = np.full((num_chunks, num_columns), -2, dtype=np.int16)
    if len(X) == 0:
        hard[active] = 0
        if (num_speakers or min_speakers or 1) > 1:
            notes.append("too little speech to tell speakers apart: one speaker")
        return hard, notes
    labels = cluster_embeddings(
        X,
        threshold=params.threshold,
        linkage_method=params.linkage,
        min_cluster_size=params.min_cluster_size,
        num_clusters=num_speakers,
        min_clusters=min_speakers,
        max_clusters=max_speakers,
    )
    num_clusters = int(labels.max()) + 1
    if num_speakers and num_clusters != num_speakers:
        notes.append(f"asked for {num_speakers} speakers, found {num_clusters} (too little speech to separate more)")
    centroids = np.stack([X[labels == k].mean(axis=0) for k in range(num_clusters)])
    sim = 2.0 - cdist(np.nan_to_num(embeddings.reshape(-1, dim)), centroids, metric="cosine").reshape(num_chunks, num_columns, num_clusters)
    sim[~valid] = -1.0  # no embedding: any cluster, after the others
    # Within one window and block, two local speakers never share a cluster (when there are enough).
    for c in range(num_chunks):
        for b in range(blocks):
            cols = [s * blocks + b for s in range(num_local) if active[c, s * blocks + b]]
            if not cols:
                continue
            rows, ks = linear_sum_assignment(sim[c, cols], maximize=True)
            for r, k in zip(rows, ks):
                hard[c, cols[r]] = k
            for col in cols:
                if hard[c, col] < 0:
                    hard[c, col] = int(np.argmax(sim[c, col]))
    return hard, notes


def _reconstruct(seg, hard_clusters: np.ndarray, count):  # type: ignore[no-untyped-def]
    """pyannote's reconstruction: per frame, the ``count`` most active clusters."""
    from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
    from pyannote.core import SlidingWindowFeature

    num_chunks, num_frames, _ = seg.data.shape
    num_clusters = max(1, int(hard_clusters.max()) + 1)
    clustered = np.full((num_chunks, num_frames, num_clusters), np.nan)
    for c, (cluster, (_, scores)) in enumerate(zip(hard_clusters, seg)):
        for k in np.unique(cluster):
            if k < 0:
                continue
            clustered[c, :, k] = np.max(scores[:, cluster == k], axis=1)
    return SpeakerDiarizationMixin.to_diarization(SlidingWindowFeature(clustered, seg.sliding_window), count)


def _frames_to_segments(discrete, out_rate: int, num_samples: int) -> list[tuple[str, int, int]]:
    """Runs of active frames -> (cluster, start sample, end sample) at ``out_rate``; bounds half-way between frame centres."""
    data = np.asarray(discrete.data) > 0.5
    window = discrete.sliding_window
    segments: list[tuple[str, int, int]] = []
    num_frames = data.shape[0]
    for k in range(data.shape[1]):
        col = np.concatenate([[False], data[:, k], [False]])
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))
        for a, b in zip(edges[::2], edges[1::2]):
            t0 = window[a].middle - window.step / 2
            t1 = window[b - 1].middle + window.step / 2
            s0 = min(num_samples, max(0, int(math.floor(t0 * out_rate + 0.5))))
            s1 = min(num_samples, max(0, int(math.floor(t1 * out_rate + 0.5))))
            if b >= num_frames:
                s1 = max(s1, s0)
            if s1 > s0:
                segments.append((str(k), s0, s1))
    return segments


def _smooth(segments: list[tuple[str, int, int]], rate: int, params: DiarizationParams) -> list[tuple[str, int, int]]:
    """Per speaker: fill gaps shorter than ``min_duration_off``, then drop turns shorter than ``min_duration_on``."""
    gap = int(round(params.min_duration_off * rate))
    shortest = int(round(params.min_duration_on * rate))
    out: list[tuple[str, int, int]] = []
    for speaker in sorted({s for s, _, _ in segments}):
        runs = sorted((a, b) for s, a, b in segments if s == speaker)
        merged: list[list[int]] = []
        for a, b in runs:
            if merged and a - merged[-1][1] < gap:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [(speaker, a, b) for a, b in merged if b - a >= shortest]
    return out


def _finalise(segments: Sequence[tuple[str, int, int]], rate: int) -> tuple[SpeakerTurn, ...]:
    """Sort, name speakers SPK00.. by first speech, number the turns."""
    ordered = sorted(segments, key=lambda x: (x[1], x[2], x[0]))
    names: dict[str, str] = {}
    for label, _, _ in ordered:
        names.setdefault(label, f"SPK{len(names):02d}")
    return tuple(
        SpeakerTurn(turn_id(i), names[label], a, b, int(rate)) for i, (label, a, b) in enumerate(ordered)
    )
