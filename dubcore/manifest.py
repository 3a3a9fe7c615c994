"""The job manifest: which film, which dubbed tracks, where the output goes, options.

A manifest is a YAML or JSON file (``schema: dub-film/manifest@1``).  Relative
paths are resolved against the manifest's own folder.  Unknown keys and missing
fields are errors that name the manifest file and the key.  The same model is the
typed parameter of the ``dub-film`` Prefect flow, so the UI form shows the same
fields with the same descriptions.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .schema import SchemaError, check_versioned, schema_tag, versioned


class ManifestError(ValueError):
    """A manifest is unreadable or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CharacterStem(_Strict):
    name: str = Field(description="Character name, as the operator knows them (e.g. 'ALICE').")
    path: str = Field(description="Dubbed dialogue of this character alone (local path or URI).")
    gain_db: float = Field(0.0, description="Gain applied to this stem in the mix, in dB.")


class DubTracks(_Strict):
    """The dubbed audio: one dialogue stem, or one stem per character, plus M&E; or a full mix."""

    language: str | None = Field(None, description="Language of the dub (BCP 47, e.g. 'es', 'fr-CA').")
    dialogue: str | None = Field(None, description="One mixed dialogue stem of the dub.")
    characters: tuple[CharacterStem, ...] = Field((), description="One dialogue stem per character.")
    me: str | None = Field(None, description="Music and effects stem (M&E), mixed under the dialogue.")
    mix: str | None = Field(None, description="A finished full mix of the dub (dialogue and M&E together).")

    @model_validator(mode="after")
    def _one_dialogue_source(self) -> "DubTracks":
        given = [k for k in ("dialogue", "characters", "mix") if getattr(self, k)]
        if not given:
            raise ValueError("dub needs 'dialogue', 'characters' or 'mix'")
        if self.mix and (self.dialogue or self.characters or self.me):
            raise ValueError("'mix' is a finished mix: give it alone, without 'dialogue', 'characters' or 'me'")
        if self.dialogue and self.characters:
            raise ValueError("give either one 'dialogue' stem or per-'characters' stems, not both")
        names = [c.name for c in self.characters]
        if len(set(names)) != len(names):
            raise ValueError(f"character names must be unique, got {names}")
        return self

    def files(self) -> list[tuple[str, str]]:
        """``(role, path)`` of every audio file of the dub, in mixing order."""
        out: list[tuple[str, str]] = []
        if self.mix:
            out.append(("mix", self.mix))
        if self.dialogue:
            out.append(("dialogue", self.dialogue))
        out.extend((f"character:{c.name}", c.path) for c in self.characters)
        if self.me:
            out.append(("me", self.me))
        return out


class QCThresholdOptions(_Strict):
    """Verdict thresholds of QC (see lipsync.qc.report for the rules); defaults are the documented ones."""

    lse_c_drop_pass: float = Field(1.0, description="Pass: LSE-C at most this far below the original shot's.")
    lse_d_rise_pass: float = Field(0.5, description="Pass: LSE-D at most this far above the original shot's.")
    lse_c_drop_fail: float = Field(3.0, description="Fail: LSE-C more than this far below the original shot's.")
    lse_c_pass: float = Field(6.0, description="Without a reference, pass needs at least this LSE-C.")
    lse_d_pass: float = Field(8.0, description="Without a reference, pass needs at most this LSE-D.")
    lse_c_fail: float = Field(3.0, description="Without a reference, LSE-C below this fails.")
    max_offset_pass: int = Field(1, ge=0, description="Pass needs |offset| of at most this many frames.")
    max_offset_fail: int = Field(3, ge=0, description="|offset| above this many frames fails.")
    asd_confidence_pass: float = Field(0.1, description="Without SyncNet, the weight-free offset estimate (Light-ASD + mouth envelope) may make a track fail/review only with at least this confidence (R^2 of the mouth against the voice level, 0..1: 0.16-0.71 on real talking faces) and its two signals agreeing; it never passes a track.")


class QCRetryOptions(_Strict):
    """A second take of every re-voiced shot whose QC verdict is in ``on``, with other crop and blend
    parameters; QC picks the better take (verdict first, then sync quality) and the film is re-assembled."""

    enabled: bool = Field(False, description="Re-render shots that fail QC once, with the parameters below.")
    on: tuple[Literal["fail", "review", "unverified"], ...] = Field(("fail",), description="Verdicts that trigger a second take.")
    crop_top: float = Field(0.05, description="Crop padding above the face box, as a fraction of its height.")
    crop_bottom: float = Field(0.2, description="Crop padding below the face box (the chin), as a fraction of its height.")
    feather: float = Field(0.12, gt=0, description="Feather of the blend mask, as a fraction of the crop size.")
    batch_size: int | None = Field(None, ge=1, description="Faces per generator batch for the second take.")


class FinetuneOptions(_Strict):
    """Fine-tune the lip-sync generator on this film's own speaking faces before lip-syncing it.

    The clips are cut from the job's own face tracks where Light-ASD says the face
    speaks (the original audio), as `dub train dataset` cuts them; the generator
    starts from ``options.lipsync_checkpoint`` and trains against the frozen
    expert for ``steps`` steps.  The tuned weights are published with the outputs
    (``model/wav2lip_finetuned.pth``) and render every shot of this job.
    """

    steps: int = Field(..., ge=1, description="Training steps (each of batch_size 5-frame windows).")
    expert: str = Field("lipsync_expert", description="Frozen lip-sync expert: a model-store entry or a checkpoint path.")
    batch_size: int = Field(8, ge=1, description="Windows per step.")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate.")
    syncnet_wt: float = Field(0.03, ge=0, le=1, description="Weight of the expert's sync loss (the paper's 0.03).")
    gan: bool = Field(False, description="Also train the visual quality discriminator (Wav2Lip + GAN).")
    disc_checkpoint: str | None = Field(None, description="With gan: start the discriminator from this checkpoint.")
    min_clip_frames: int = Field(5, ge=5, description="Shortest speaking run (25 fps frames) used for training.")
    seed: int = Field(0, description="Seed of the sample draws.")


class JobOptions(_Strict):
    shot_detectors: tuple[str, ...] = Field(("content", "fade"), description="Shot detectors to run (content, adaptive, fade).")
    min_shot_frames: int = Field(15, ge=1, description="Shortest shot in frames; closer cuts are merged.")
    content_threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (PySceneDetect's default 27).")
    audio_sample_rate: int = Field(48000, ge=8000, description="Sample rate of the delivered mix; stems are resampled to it.")
    audio_length_policy: Literal["strict", "pad"] = Field(
        "strict",
        description="A dub track more than one frame off the picture: 'strict' refuses it, 'pad' pads with silence or trims.",
    )
    vfr_policy: Literal["refuse", "conform"] = Field(
        "refuse", description="Variable-frame-rate film: 'refuse' stops with an error, 'conform' converts it to CFR first."
    )
    face_weights: str = Field(  # = lipsync.faces.detect.DEFAULT_DETECTOR (dubcore imports no lipsync; a test checks it)
        "retinaface_mobilenet0.25",
        description="Face detector: a model-store entry (`dub models list`) whose family picks the detector, "
        "or a checkpoint path (a RetinaFace file).",
    )
    face_device: str = Field("auto", description="Device of the face detector: auto (CUDA when present), cpu, cuda, cuda:N.")
    face_batch_size: int = Field(16, ge=1, description="Frames per face-detector batch.")
    face_max_size: int = Field(640, ge=32, description="Frames are downscaled to this longer side for face detection.")
    face_min_size: float = Field(32.0, ge=0, description="Face tracks smaller than this (median box height, px) are dropped.")
    face_min_track_frames: int = Field(8, ge=1, description="Face tracks shorter than this (frames) are dropped.")
    lipsync_checkpoint: str | None = Field(
        None,
        description="Wav2Lip weights (model-store entry such as wav2lip_gan, or a path). Unset: shots pass through unchanged.",
    )
    lipsync_generator: str = Field(
        "auto", description="Generator family that loads lipsync_checkpoint (lipsync.render.generator.GENERATORS): "
        "auto (the model-store entry's family, else wav2lip), or a registered family name.")
    finetune: FinetuneOptions | None = Field(
        None, description="Fine-tune the generator on this film's speaking faces first (needs lipsync_checkpoint and the film's audio).")
    lipsync_device: str = Field("auto", description="Device of the lip-sync workers: auto, cpu, cuda, cuda:N.")
    lipsync_batch_size: int | None = Field(None, ge=1, description="Faces per generator batch; unset: automatic.")
    lipsync_backend: Literal["auto", "ray", "local"] = Field(
        "auto", description="Where shots render: ray (one worker per GPU; DUB_RAY_ADDRESS picks a cluster), local (this process), auto (ray if installed)."
    )
    cache: bool = Field(
        True, description="Reuse rendered shots of earlier runs with the same inputs, parameters and weights (resume); "
        "off renders every shot again.")
    cache_dir: str | None = Field(
        None, description="Folder of the render cache; unset: $DUB_CACHE_DIR, else ~/.cache/dub-film.")
    video_codec: str = Field(
        "auto", description="Encoder of the delivered picture: 'auto' (or 'source') follows the master's codec family "
        "(H.264 -> libx264, HEVC -> libx265, ProRes -> prores_ks at its profile, FFV1 -> ffv1; any other codec, or a family "
        "the container cannot hold, -> libx264); or an explicit encoder: libx264, libx265, ffv1, prores_ks.")
    crf: int | None = Field(
        None, ge=0, le=51, description="Quality for x264/x265 (lower is better); unset: 8 for x264, 10 for x265, which keep "
        "unchanged shots at >= 45 dB PSNR against the master (lipsync.media.frames.DELIVERY_CRF, bench/bench_delivery.py).")
    preset: str | None = Field("medium", description="x264/x265 speed preset.")
    container: Literal["mp4", "mov", "mkv"] = Field("mp4", description="Container of the delivered film.")
    audio_codec: str | None = Field(None, description="Audio codec; default AAC 320k in MP4, 24-bit PCM in MOV/MKV.")
    speakers: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Speaker stage (diarization, active-speaker detection, casting): 'auto' runs it when lip-syncing; "
        "'off' drives every face with the whole dub dialogue.",
    )
    diarization_backend: Literal["auto", "embedded", "pyannote"] = Field(
        "auto", description="Diarization: pyannote pipeline when available (auto), the offline embedded model, or pyannote only."
    )
    diarization_pipeline: str | None = Field(
        None, description="pyannote pipeline: local folder / config.yaml, or a hub name (token from HF_TOKEN)."
    )
    num_speakers: int | None = Field(None, ge=1, description="Number of speakers in the original, when known (helps diarization).")
    dub_num_speakers: int | None = Field(None, ge=1, description="Number of speakers in a mixed dub dialogue stem, when known.")
    asd_weights: str = Field("light_asd", description="Active-speaker-detection weights: a model-store entry or a checkpoint path.")
    qc: Literal["auto", "on", "off"] = Field("auto", description="QC of every re-voiced face (LSE-D / LSE-C): 'auto' when lip-syncing.")
    qc_syncnet_weights: str = Field(
        "syncnet_v2", description="SyncNet weights for LSE (model-store entry or path); absent: Light-ASD sync only, said in the report."
    )
    qc_thresholds: QCThresholdOptions = Field(default_factory=QCThresholdOptions, description="QC verdict thresholds.")
    qc_retry: QCRetryOptions = Field(default_factory=QCRetryOptions, description="Second takes of shots that fail QC.")
    review_casting: bool = Field(
        False, description="Stop after casting, before anything is rendered, and wait for an operator to approve or edit the "
        "casting in the Prefect UI (review artifact + casting preview video); the run then renders the casting given.")
    review_timeout_s: int = Field(
        86400, ge=1, description="How long a casting review waits for the operator (seconds). Unanswered: the run fails, "
        "nothing is rendered or published; approve by re-running with `casting:` set or review_casting: false.")

    @model_validator(mode="after")
    def _finetune_needs_a_generator(self) -> "JobOptions":
        if self.finetune is not None and not self.lipsync_checkpoint:
            raise ValueError("options.finetune needs options.lipsync_checkpoint: the generator to start from "
                             "(e.g. wav2lip_gan, or a checkpoint of `dub train wav2lip`)")
        return self

    @model_validator(mode="after")
    def _review_needs_a_casting(self) -> "JobOptions":
        if self.review_casting and self.speakers == "off":
            raise ValueError("options.review_casting needs the speaker stage, but options.speakers is 'off' "
                             "(every face driven by the whole dialogue: there is no casting to review); "
                             "set speakers: auto or on, or review_casting: false")
        return self

    @property
    def runs_qc(self) -> bool:
        """Whether QC runs: 'on', or 'auto' while lip-syncing."""
        return self.qc == "on" or (self.qc == "auto" and bool(self.lipsync_checkpoint))

    @property
    def runs_speakers(self) -> bool:
        """Whether the speaker stage runs: 'on', or 'auto' while lip-syncing or reviewing the casting."""
        return self.speakers == "on" or (self.speakers == "auto" and (bool(self.lipsync_checkpoint) or self.review_casting))


class Casting(_Strict):
    """The operator's overrides of the automatic casting (ids come from speakers.json / faces.json of a run)."""

    voices: dict[str, str] = Field(
        default_factory=dict,
        description="Dubbed voice -> original speaker, e.g. {ALICE: SPK01}: the character stem ALICE dubs the speaker SPK01. "
        "A mixed dialogue stem's voices are named 'dialogue:SPK00' ...",
    )
    tracks: dict[str, str | None] = Field(
        default_factory=dict,
        description="Face track -> original speaker, e.g. {'shot-0003/face-01': SPK00}; null: never lip-sync that face.",
    )


class DubJob(_Strict):
    """One dubbing job: the typed parameters of the ``dub-film`` flow."""

    film: str = Field(description="The original film: video with its original audio (local path or URI).")
    dub: DubTracks = Field(description="The dubbed audio tracks.")
    output: str | None = Field(None, description="Output folder (local path or URI); `dub run --out` overrides it.")
    title: str | None = Field(None, description="Title shown in reports.")
    options: JobOptions = Field(default_factory=JobOptions, description="Processing options.")
    casting: Casting = Field(default_factory=Casting, description="Overrides of who dubs whom and which face speaks.")

    def resolved(self, base: Path | str) -> "DubJob":
        """Copy with every relative path made absolute against ``base``: a local folder, or
        a URI prefix such as ``s3://bucket/jobs`` for a manifest read from object storage."""

        def fix(p: str | None) -> str | None:
            if p is None or "://" in p:
                return p
            if isinstance(base, str) and "://" in base:
                return join_uri(base, p)
            path = Path(p).expanduser()
            return str(path if path.is_absolute() else (Path(base) / path).resolve())

        dub = self.dub.model_copy(
            update={
                "dialogue": fix(self.dub.dialogue),
                "me": fix(self.dub.me),
                "mix": fix(self.dub.mix),
                "characters": tuple(c.model_copy(update={"path": fix(c.path)}) for c in self.dub.characters),
            }
        )
        return self.model_copy(update={"film": fix(self.film), "dub": dub, "output": fix(self.output)})

    def to_manifest(self) -> dict[str, Any]:
        return versioned("manifest", self.model_dump(mode="json", exclude_none=True))


def _explain(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"unknown key '{loc}': remove it or check its spelling")
        elif kind == "missing":
            lines.append(f"missing field '{loc}'")
        else:
            lines.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
    return f"{where}: invalid manifest:\n  - " + "\n  - ".join(lines)


def parse_job(data: Any, where: str, base: Path | str | None = None) -> DubJob:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: a manifest must be a mapping, got {type(data).__name__}")
    try:
        check_versioned(data, "manifest", where)
    except SchemaError as exc:
        raise ManifestError(f"{exc}; add `schema: {schema_tag('manifest')}` as the first line") from None
    body = {k: v for k, v in data.items() if k != "schema"}
    try:
        job = DubJob.model_validate(body)
    except ValidationError as exc:
        raise ManifestError(_explain(exc, where)) from None
    return job.resolved(base) if base is not None else job


def load_manifest(path: str | Path) -> DubJob:
    """Read and validate a YAML or JSON manifest; relative paths resolve against its folder."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: no such manifest file")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    return parse_job(data, str(p), base=p.resolve().parent)


def join_uri(base: str, rel: str) -> str:
    """``rel`` (a relative path of a manifest) against the URI prefix ``base``; never above the bucket."""
    scheme, rest = base.split("://", 1)
    bucket, _, prefix = rest.partition("/")
    if rel.startswith("/") or "\\" in rel:
        raise ManifestError(f"{base}: path '{rel}' in a manifest read from {scheme}:// must be relative (a/b.wav) or a full URI")
    key = posixpath.normpath(posixpath.join(prefix, rel))
    if key == ".." or key.startswith("../"):
        raise ManifestError(f"{base}: path '{rel}' leaves the bucket '{bucket}'; give a path inside it or a full URI")
    return f"{scheme}://{bucket}/{key}"


def load_manifest_uri(uri: str, workdir: Path) -> DubJob:
    """Read a manifest from a local path or a storage URI (``s3://bucket/jobs/film.yaml``).

    A remote manifest is downloaded (verified) into ``workdir``; its relative paths
    resolve against its own prefix (``s3://bucket/jobs/``)."""
    if "://" not in uri or uri.startswith("file://"):
        return load_manifest(uri[len("file://"):] if uri.startswith("file://") else uri)
    from .storage import open_storage

    local = open_storage(uri).local_path(uri, workdir)
    text = Path(local).read_text(encoding="utf-8")
    is_json = uri.lower().endswith(".json")
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{uri}: not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
    return parse_job(data, uri, base=uri.rsplit("/", 1)[0])


def write_manifest(path: str | Path, job: DubJob) -> Path:
    from .schema import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(job.to_manifest(), sort_keys=False), encoding="utf-8")
    return Path(path)
