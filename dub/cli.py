"""``dub``: one subcommand per stage, each usable alone on a file; a thin layer over the library.

Every file written is versioned JSON (a ``schema`` field) or a standard format
(EDL, OTIO, RTTM, SRT), and appears only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dubcore.manifest import ManifestError
from dubcore.schema import SchemaError, write_json

app = typer.Typer(
    name="dub",
    help="dub-film: make the actors on screen speak the dubbed language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_VERBOSE = False


def _where(exc: BaseException) -> str:
    """``"stage STAGE (INPUT): "`` when the flow said which stage failed on which input."""
    stage = getattr(exc, "dub_stage", None)
    if not stage:
        return ""
    where = getattr(exc, "dub_input", None)
    return f"{stage}{f' ({where})' if where else ''}: "


@contextmanager
def _errors(catch_all: bool = False) -> Iterator[None]:
    """Turn the library's clear errors into one red line and a non-zero exit, no traceback (``-v`` shows it).

    With ``catch_all`` any other exception is one line too (its type and message), exit 1."""
    from dubcore.storage import StorageError
    from lipsync.media.errors import MediaError

    try:
        yield
    except (MediaError, ManifestError, SchemaError, StorageError, FileNotFoundError, ValueError) as exc:
        if _VERBOSE:
            err.print_exception()
        _fail(_where(exc) + str(exc).strip())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not catch_all or _VERBOSE:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(f"{_where(exc)}{type(exc).__name__}: {first} (run `dub -v ...` for the traceback)", code=1)


class _NoTracebacks(logging.Filter):
    """Console only, without ``-v``: Prefect's run log (and any traceback) stays in the Prefect log (API),
    not on the operator's screen, which gets the result or one error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect" or record.name.startswith("prefect."):
            return False
        if record.exc_info:
            record.exc_info = None
            record.exc_text = None
        return "Traceback (most recent call last)" not in record.getMessage()


def _quiet_console() -> None:
    from prefect.logging.handlers import APILogHandler

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, APILogHandler) and not any(isinstance(f, _NoTracebacks) for f in handler.filters):
                handler.addFilter(_NoTracebacks())


@contextmanager
def _bar(description: str) -> Iterator:  # type: ignore[type-arg]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield lambda done, total: update(description, done, total), update


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and decisions; show tracebacks.")) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def probe(
    media: Path = typer.Argument(..., help="Video or audio file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the probe as JSON here instead of stdout."),
) -> None:
    """Describe a media file: streams, exact frame rate, frame count, rotation, VFR."""
    from dubcore.schema import versioned
    from lipsync.media.probe import probe as probe_media

    with _errors():
        info = probe_media(media)
    if out:
        write_json(out, "probe", info.to_dict())
    else:
        typer.echo(json.dumps(versioned("probe", info.to_dict()), indent=2))


@app.command()
def shots(
    video: Path = typer.Argument(..., help="The film (or any video)."),
    out: Path = typer.Option(..., "--out", "-o", help="shots.json to write."),
    edl: Optional[Path] = typer.Option(None, help="Also write a CMX 3600 EDL here."),
    otio: Optional[Path] = typer.Option(None, help="Also write an OpenTimelineIO timeline here."),
    detector: list[str] = typer.Option(["content", "fade"], "--detector", "-d", help="Detectors to run (repeat)."),
    min_shot_frames: int = typer.Option(15, min=1, help="Shortest shot, in frames."),
    threshold: float = typer.Option(27.0, help="ContentDetector threshold."),
) -> None:
    """Split a film into shots, frame-accurate, with exact timecodes."""
    from lipsync.shots import detect_shots, write_shot_files

    with _errors(), _bar("shots") as (progress, _):
        shot_list = detect_shots(
            video,
            detectors=detector,
            min_shot_frames=min_shot_frames,
            detector_options={"content": {"threshold": threshold}},
            progress=progress,
        )
        write_shot_files(shot_list, out, edl, otio)  # all three or none
    for shot in shot_list:
        typer.echo(f"{shot.id}  {shot.start_timecode} - {shot.end_timecode}  frames [{shot.frames.start}, {shot.frames.end})")


@app.command()
def run(
    manifest: str = typer.Argument(..., help="Job manifest (YAML or JSON): a path, or a URI such as s3://bucket/jobs/film.yaml."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder or URI (s3://bucket/prefix); overrides the manifest's."),
) -> None:
    """Run the whole dub-film flow locally on one job."""
    from dubcore.manifest import load_manifest

    with _errors(catch_all=True):
        if "://" in manifest and not manifest.startswith("file://"):  # read by the flow, from storage
            out_uri = out if out is None or "://" in out else str(Path(out).resolve())
            result = _run_flow(None, manifest=manifest, output=out_uri)
        else:
            job = load_manifest(manifest)
            if out is not None:
                job = job.model_copy(update={"output": out if "://" in out else str(Path(out).resolve())})
            if not job.output:
                raise ValueError(f"{manifest}: no output folder; give `--out DIR` or `output:` in the manifest")
            result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))


def _run_flow(job, **params):  # type: ignore[no-untyped-def]
    # A studio network is closed: no telemetry; a loaded machine may need time to start the local server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.dub_film import dub_film
    from tasks import progress as task_progress

    if not _VERBOSE:
        _quiet_console()

    with _bar("run") as (_, update):
        task_progress.add_sink(update)
        try:
            return dub_film(job, **params)
        finally:
            task_progress.remove_sink(update)


models_app = typer.Typer(help="The model store: list, pull and verify checkpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")

from .train import train_app  # noqa: E402

app.add_typer(train_app, name="train")


@contextmanager
def _store_errors() -> Iterator[None]:
    from lipsync.store import StoreError

    with _errors():
        try:
            yield
        except StoreError as exc:
            _fail(str(exc))


@models_app.command("list")
def models_list(
    store: Optional[Path] = typer.Option(None, help="Model store folder (default $DUB_MODEL_STORE or ~/.cache/dub-film/models)."),
    as_json: bool = typer.Option(False, "--json", help="Print versioned JSON instead of a table."),
) -> None:
    """Every known checkpoint, its license, and whether it is in the store."""
    from dubcore.schema import versioned
    from lipsync import store as model_store

    rows = []
    for entry in model_store.list_entries():
        path = model_store.path_for(entry, store)
        rows.append({
            "name": entry.name,
            "family": entry.family,
            "default": model_store.DEFAULTS.get(entry.family) == entry.name,
            "license": entry.license,
            "size": entry.size,
            "sha256": entry.sha256,
            "present": path.is_file(),
            "path": str(path),
        })
    if as_json:
        typer.echo(json.dumps(versioned("models", {"models": rows}), indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        typer.echo(f"{mark} {r['name']:<28} {r['family']:<11} {'present' if r['present'] else 'missing':<8} {r['license']}")


@models_app.command("pull")
def models_pull(
    names: list[str] = typer.Argument(..., help="Entry names (see `dub models list`)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    source: Optional[str] = typer.Option(None, help="Copy from this local file or URL instead of the entry's URL."),
    allow_unverified: bool = typer.Option(False, help="Accept an entry with no published sha256 (hash recorded on first pull)."),
    force: bool = typer.Option(False, help="Fetch again even if present and verified."),
) -> None:
    """Download (or copy) checkpoints into the store, verifying size and sha256."""
    from lipsync import store as model_store

    if source and len(names) != 1:
        _fail("--source takes exactly one entry name")
    with _store_errors():
        for name in names:
            path = model_store.pull(name, store, source=source, allow_unverified=allow_unverified, force=force)
            typer.echo(f"{name}: {path}")


@models_app.command("verify")
def models_verify(
    names: Optional[list[str]] = typer.Argument(None, help="Entry names; default: every entry present in the store."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
) -> None:
    """Re-hash checkpoints in the store against their recorded sha256."""
    from lipsync import store as model_store

    with _store_errors():
        if not names:
            names = [e.name for e in model_store.list_entries() if model_store.path_for(e, store).is_file()]
        for name in names:
            typer.echo(f"{name}: ok ({model_store.verify(name, store)})")


@app.command()
def faces(
    video: Path = typer.Argument(..., help="The film or clip."),
    out: Path = typer.Option(..., "--out", "-o", help="faces.json to write."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of the film (default: detect shots now)."),
    weights: str = typer.Option("retinaface_mobilenet0.25", help="Detector weights: a model-store entry or a checkpoint path."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, min=1, help="Frames per detector batch."),
    max_size: int = typer.Option(640, min=32, help="Frames are downscaled so their longer side is at most this for detection."),
    no_smooth: bool = typer.Option(False, "--no-smooth", help="Keep the raw (tracked, interpolated) boxes."),
    render: Optional[Path] = typer.Option(None, help="Also write a debug video with the tracks drawn."),
) -> None:
    """Detect faces, track them through each shot and smooth them; write faces.json."""
    from lipsync.faces.detect import build_detector
    from lipsync.faces.facesfile import write_faces
    from lipsync.faces.pipeline import FaceTrackingParams, render_tracks, track_film_faces
    from lipsync.media.probe import probe as probe_media
    from lipsync.shots import detect_shots, read_shots

    with _store_errors(), _bar("faces") as (progress, _):
        info = probe_media(video)
        shot_list = read_shots(shots_file) if shots_file else detect_shots(video, info=info)
        detector = build_detector("retinaface", weights=weights, store=store, device=device, batch_size=batch_size, max_size=max_size)
        params = FaceTrackingParams(smooth=not no_smooth)
        results = track_film_faces(video, shot_list, detector, params, batch_size=batch_size, info=info, progress=progress)
        tracks = [t for r in results for t in r.tracks]
        write_faces(
            out,
            source=str(video),
            fps=shot_list.fps,
            frame_count=shot_list.frame_count,
            shots=list(shot_list),
            tracks=tracks,
            dropped=[d for r in results for d in r.dropped_dicts()],
            params={"detector": detector.describe(), **params.to_dict()},
            quality={tid: q for r in results for tid, q in r.quality.items()},
        )
        if render:
            render_tracks(video, tracks, render, info=info)
    for r in results:
        weak = [t.id for t in r.tracks if not r.castable(t.id)]
        typer.echo(f"{r.shot_id}: {len(r.tracks)} track(s)" + (f", {len(r.dropped)} dropped" if r.dropped else "")
                   + (f", {len(weak)} not castable" if weak else ""))
        for tid in weak:
            typer.echo(f"  {tid}: {r.quality[tid].reason}")


@app.command()
def asd(
    video: Path = typer.Argument(..., help="The film or clip."),
    out: Path = typer.Option(..., "--out", "-o", help="asd.json to write."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of the video (default: detect and track faces now)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio to score against, starting at frame 0 (default: the video's own)."),
    weights: str = typer.Option("light_asd", help="Light-ASD weights: a model-store entry or a checkpoint path."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json, when detecting faces (default: detect shots now)."),
    face_weights: str = typer.Option("retinaface_mobilenet0.25", help="Face detector weights, when detecting."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Score every face track with Light-ASD (active speaker detection); write asd.json."""
    import tempfile

    from lipsync import store as model_store
    from lipsync.faces.facesfile import read_faces
    from lipsync.media.probe import probe as probe_media
    from lipsync.models.light_asd import load_light_asd
    from lipsync.shots import detect_shots, read_shots
    from lipsync.speakers.asd import AsdParams, AsdResult, audio_16k_memmap, score_tracks

    with _store_errors(), _bar("asd") as (progress, _), tempfile.TemporaryDirectory(prefix="dub-asd-") as tmp:
        info = probe_media(video)
        v = info.require_video()
        model = load_light_asd(model_store.resolve(weights, store), device)
        if faces_file:
            tracks = list(read_faces(faces_file).tracks)
        else:
            shot_list = read_shots(shots_file) if shots_file else detect_shots(video, info=info)
            tracks = _track_faces(video, shot_list, info, face_weights, store, device)
        sound = audio_16k_memmap(audio or video, Path(tmp) / "audio16k.f32")
        params = AsdParams()
        scores = score_tracks(video, tracks, sound, 0, model, fps=v.fps, info=info, params=params, progress=progress)
        entry = model_store.entry_for(weights, "light_asd")
        result = AsdResult.from_scores(
            str(video), v.fps, v.frame_count, tracks, scores, params,
            model={"weights": weights, "entry": entry.name, "trained_on": entry.meta.get("trained_on"),
                   "audio": str(audio or video)},
        )
        result.write(out)
    for t in result.tracks:
        spans = ", ".join(f"[{r.start}, {r.end})" for r in t.speaking) or "none"
        typer.echo(f"{t.track_id}: frames [{t.frames.start}, {t.frames.end}), speaking {spans}")


@app.command()
def lipsync(
    video: Path = typer.Argument(..., help="A shot or clip with a face to re-voice."),
    audio: Path = typer.Argument(..., help="The new speech (any format ffmpeg reads); it starts at the clip's first frame."),
    out: Path = typer.Option(..., "--out", "-o", help="Output video (the clip with new lips and this audio)."),
    checkpoint: str = typer.Option("wav2lip_gan", help="Wav2Lip weights: a model-store entry or a checkpoint path."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of the clip (default: detect and track now)."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of the clip (default: the clip is one shot)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Faces per generator batch (default: automatic)."),
    face_weights: str = typer.Option("retinaface_mobilenet0.25", help="Face detector weights, when detecting."),
    workdir: Optional[Path] = typer.Option(None, help="Keep intermediate files here (default: a temporary folder)."),
    dump: Optional[Path] = typer.Option(
        None, "--dump",
        help="Parity dump: write DIR/frame-NNNNNN.npz (face_input, mel, output as the generator saw and gave them) "
             "per lip-synced frame; one sub-folder per track when several faces are driven."),
) -> None:
    """Lip-sync every face of a clip to AUDIO with Wav2Lip; write the clip with that audio."""
    import tempfile

    from dubcore.records import ShotList
    from lipsync.faces.facesfile import read_faces
    from lipsync.inference import LipSyncParams, NpzDump
    from lipsync.media.assemble import assemble
    from lipsync.media.audio import Stem, mix_stems, to_wav
    from lipsync.media.probe import probe as probe_media
    from lipsync.render import LipSyncWorker, ShotJob
    from lipsync.shots import read_shots

    with _store_errors(), _bar("lipsync") as (progress, _), tempfile.TemporaryDirectory(prefix="dub-lipsync-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        info = probe_media(video)
        v = info.require_video()
        shot_list = read_shots(shots_file) if shots_file else ShotList.from_cuts(str(video), v.fps, v.frame_count, [])
        worker = LipSyncWorker(str(model_path(checkpoint, store)), device, LipSyncParams(batch_size=batch_size))
        if faces_file:
            tracks = list(read_faces(faces_file).tracks)
        else:
            tracks = _track_faces(video, shot_list, info, face_weights, store, worker.device)
        if dump is not None:
            worker.engine.dump = NpzDump(dump, per_track=len({t.id for t in tracks}) > 1)
        sr = worker.engine.contract.sample_rate
        speech = to_wav(audio, work / "speech16k.wav", sample_rate=sr, channels=1)
        segments = {}
        for shot in shot_list:
            shot_tracks = tuple(t for t in tracks if t.shot_id == shot.id)
            if not shot_tracks:
                continue
            job = ShotJob(str(video), v.fps, shot.frames, shot_tracks, str(speech), str(work / f"{shot.id}.mkv"), shot_id=shot.id)
            segments[shot.id] = worker.run(job).segment
            progress(shot.frames.end, v.frame_count)
        mix = mix_stems([Stem(Path(audio), "speech")], work / "mix.wav", frame_count=v.frame_count, fps=v.fps,
                        length_policy="pad", workdir=work / "stems")
        assemble(video, shot_list, out, audio=mix.path, segments=segments, info=info)
    typer.echo(f"{out}: {len(segments)} shot(s) lip-synced, {sum(1 for t in tracks)} face track(s)")


@app.command()
def diarize(
    media: Path = typer.Argument(..., help="Audio or video file (its first audio stream is used)."),
    out: Path = typer.Option(..., "--out", "-o", help="RTTM file to write."),
    num_speakers: Optional[int] = typer.Option(None, "--num-speakers", "-n", min=1, help="Number of speakers, when known."),
    min_speakers: Optional[int] = typer.Option(None, "--min-speakers", min=1, help="At least this many speakers."),
    max_speakers: Optional[int] = typer.Option(None, "--max-speakers", min=1, help="At most this many speakers."),
    backend: str = typer.Option("auto", help="auto | embedded (offline, bundled weights) | pyannote."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", help="pyannote pipeline: hub name (with --token) or local path."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", help="Hugging Face token for a gated pyannote pipeline."),
    sample_rate: int = typer.Option(16000, "--sample-rate", min=1, help="Sample rate the turns are counted in."),
) -> None:
    """Who speaks when: diarize the audio of MEDIA into speaker turns; write them as RTTM."""
    from lipsync.speakers.diarize import DiarizationError
    from lipsync.speakers.diarize import diarize as run_diarization
    from lipsync.speakers.rttm import write_rttm

    if backend not in ("auto", "embedded", "pyannote"):
        _fail(f"--backend must be auto, embedded or pyannote, not {backend!r}")
    with _errors(), _bar("diarize") as (progress, _):
        try:
            result = run_diarization(
                media,
                sample_rate,
                backend=backend,  # type: ignore[arg-type]
                num_speakers=num_speakers,
                min_speakers=min_speakers,
                max_speakers=max_speakers,
                pyannote_pipeline=pipeline,
                token=token,
                progress=progress,
            )
        except DiarizationError as exc:
            _fail(str(exc))
        write_rttm(out, result)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    rate = result.sample_rate
    for t in result.turns:
        typer.echo(f"{t.id}  {t.speaker}  {t.start_sample / rate:9.3f} - {t.end_sample / rate:9.3f} s  samples [{t.start_sample}, {t.end_sample})")
    typer.echo(f"{out}: {len(result.turns)} turn(s), {len(result.speakers)} speaker(s), backend {result.backend}")


@app.command()
def match(
    manifest: Path = typer.Argument(..., help="Job manifest (YAML or JSON): the film, the dub tracks, casting overrides."),
    out: Path = typer.Option(..., "--out", "-o", help="speakers.json to write; original.rttm, asd.json and voices/ go beside it."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of the film (default: detect shots now)."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of the film (default: detect and track now)."),
    asd_file: Optional[Path] = typer.Option(None, "--asd", help="asd.json of those faces (default: score them now)."),
    rttm: Optional[Path] = typer.Option(None, "--rttm", help="Diarization of the original, RTTM (default: diarize now)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N (face detection and active speakers)."),
) -> None:
    """Cast a film: which face speaks as which original speaker, and which dubbed voice drives it."""
    import tempfile

    from dubcore.manifest import load_manifest
    from lipsync.faces.facesfile import read_faces, write_faces
    from lipsync.pipeline import preflight, shot_settings, track_job_faces
    from lipsync.shots import detect_shots, read_shots, write_shots
    from lipsync.speakers import stage
    from lipsync.speakers.asd import read_asd
    from lipsync.speakers.plan import CastingError
    from lipsync.speakers.rttm import read_rttm, write_rttm

    folder = out.resolve().parent
    with _store_errors(), _model_store_env(store), _bar("match") as (progress, _), tempfile.TemporaryDirectory(prefix="dub-match-") as tmp:
        job = load_manifest(manifest)
        pre = preflight(job)
        video = pre.info.require_video()
        if not pre.info.audio:
            _fail(f"{pre.film}: the film has no audio stream; casting needs the original dialogue")
        if video.vfr:
            _fail(f"{pre.film}: variable frame rate; conform it first (dub run with options.vfr_policy: conform)")
        if shots_file:
            shot_list = read_shots(shots_file)
        else:  # the same split as `dub run` with this manifest's options
            shot_list = detect_shots(pre.film, info=pre.info, **shot_settings(job.options))
            write_shots(folder / "shots.json", shot_list)
        if faces_file:
            faces_data = read_faces(faces_file)
            tracks = list(faces_data.tracks)
            quality = dict(getattr(faces_data, "quality", {}) or {})
        else:
            results = track_job_faces(pre.film, shot_list, pre.info, job.options, device, store=store)
            tracks = [t for r in results for t in r.tracks]
            quality = {tid: q for r in results for tid, q in getattr(r, "quality", {}).items()}
            extra = {"quality": quality} if quality else {}
            write_faces(folder / "faces.json", source=str(pre.film), fps=shot_list.fps, frame_count=shot_list.frame_count,
                        shots=list(shot_list), tracks=tracks, dropped=[d for r in results for d in r.dropped_dicts()], **extra)
        audio = stage.original_audio(pre.film, tmp)
        if rttm:
            turns = read_rttm(rttm, stage.SAMPLE_RATE)
        else:
            diarization = stage.diarize_original(audio, job, pre.film.stem, progress=progress)
            write_rttm(folder / "original.rttm", diarization)
            turns = list(diarization.turns)
        asd = read_asd(asd_file) if asd_file else stage.score_faces(pre.film, pre.info, tracks, audio, job, store=str(store) if store else None,
                                                                   device=device, progress=progress)
        if not asd_file:
            asd.write(folder / "asd.json")
        voices, dub_diarization = stage.dub_voices(job, pre, folder / "voices", progress=progress)
        if dub_diarization is not None:
            write_rttm(folder / "dub.rttm", dub_diarization)
        try:
            plan = stage.cast_film(list(shot_list), tracks, asd, turns, voices, job, video.fps, video.frame_count, quality)
        except CastingError as exc:
            _fail(f"{manifest}: {exc}")
        plan.write(out)
    for c in plan.characters:
        where = f"on screen in {', '.join(c.shots)}" if c.on_screen else "off screen"
        typer.echo(f"{c.id}: {where}; dubbed by {c.voice or 'no voice'}")
    for d in plan.drives:
        spans = ", ".join(f"[{r.start}, {r.end})" for r in d.speaking)
        typer.echo(f"{d.track_id} <- {d.voice}: frames {spans}")
    for note in plan.to_dict()["notes"]:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    typer.echo(f"{out}: {len(plan.characters)} speaker(s), {len(plan.off_screen)} off screen, {len(plan.drives)} face(s) to lip-sync")


@app.command()
def preview(
    manifest: Path = typer.Argument(..., help="Job manifest (YAML or JSON): the film, the dub tracks, casting overrides."),
    out: Path = typer.Option(..., "--out", "-o", help="The preview to write (MP4); the casting files go beside it, as `dub match` writes them."),
    speakers_file: Optional[Path] = typer.Option(None, "--speakers", help="speakers.json to show (default: cast now, as `dub match`)."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of the film (default: detect shots now)."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of the film (default: detect and track now)."),
    asd_file: Optional[Path] = typer.Option(None, "--asd", help="asd.json of those faces (default: score them now)."),
    rttm: Optional[Path] = typer.Option(None, "--rttm", help="Diarization of the original, RTTM (default: diarize now)."),
    max_height: int = typer.Option(360, min=2, help="Lines of the preview (never more than the film's)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N (face detection and active speakers)."),
) -> None:
    """The casting preview alone: cast the film (as `dub match`), then draw it on the film at low resolution:
    each driven face boxed and labelled with its character and voice, tinted where it will be re-voiced."""
    from dubcore.manifest import load_manifest
    from dubcore.schema import read_json
    from lipsync.faces.facesfile import read_faces
    from lipsync.media.probe import probe as probe_media
    from lipsync.preview import CastingView, render_preview

    folder = out.resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    if speakers_file is None:
        speakers_file = folder / "speakers.json"
        match(manifest=manifest, out=speakers_file, shots_file=shots_file, faces_file=faces_file, asd_file=asd_file,
              rttm=rttm, store=store, device=device)  # the same casting as `dub match`, its files beside the preview
        faces_file = faces_file or folder / "faces.json"
    elif faces_file is None:
        _fail(f"--speakers {speakers_file}: give --faces too (the faces.json the casting was made on)")
    with _errors(), _bar("preview") as (progress, _):
        job = load_manifest(manifest)
        film = Path(job.film)
        tracks = list(read_faces(faces_file).tracks)
        view = CastingView.from_plan_dict(read_json(speakers_file, "speakers"), [t.id for t in tracks])
        info = probe_media(film)
        result = render_preview(film, tracks, view, out, info=info, max_height=max_height,
                                progress=progress)
    driven = [t for t in view.tracks.values() if t.driven]
    for t in sorted(view.tracks.values(), key=lambda t: t.track_id):
        typer.echo(f"{t.track_id}: {t.label}")
    typer.echo(f"{out}: {result.frames} frames at {result.width}x{result.height}; {len(driven)} of {len(view.tracks)} face(s) driven")


@contextmanager
def _model_store_env(store: Optional[Path]) -> Iterator[None]:
    """``--store`` for code that reads the store from ``$DUB_MODEL_STORE`` (restored afterwards)."""
    if store is None:
        yield
        return
    before = os.environ.get("DUB_MODEL_STORE")
    os.environ["DUB_MODEL_STORE"] = str(store)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DUB_MODEL_STORE", None)
        else:
            os.environ["DUB_MODEL_STORE"] = before


@app.command()
def qc(
    video: Path = typer.Argument(..., help="A lip-synced film or clip."),
    audio: Path = typer.Argument(..., help="The speech that drove its lips (any format ffmpeg reads), starting at frame 0."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, report.csv and report.html."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of VIDEO (default: detect and track now)."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json of VIDEO (default: detect shots now)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="The original film, measured with its own audio as the reference."),
    syncnet: str = typer.Option("syncnet_v2", help="SyncNet weights (model-store entry or path); absent: Light-ASD sync only."),
    asd_weights: str = typer.Option("light_asd", "--asd-weights", help="Light-ASD weights (model-store entry or path)."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Measure lip sync (SyncNet LSE-D / LSE-C, Light-ASD offset) of every face of VIDEO against AUDIO."""
    import tempfile

    from lipsync import store as model_store
    from lipsync.faces.facesfile import read_faces
    from lipsync.media.audio import to_wav
    from lipsync.media.probe import probe as probe_media
    from lipsync.models.light_asd import load_light_asd
    from lipsync.qc.report import QCReport, QCThresholds, write_qc_report
    from lipsync.qc.shots import QCModels, array_source, qc_shot, wav_source
    from lipsync.shots import detect_shots, read_shots
    from lipsync.speakers.asd import audio_16k_memmap

    notes = []
    with _store_errors(), _bar("qc") as (progress, _), tempfile.TemporaryDirectory(prefix="dub-qc-") as tmp:
        info = probe_media(video)
        v = info.require_video()
        sync_model = None
        try:
            from lipsync.models.syncnet import load_syncnet

            sync_model = load_syncnet(model_store.resolve(syncnet, store), device)
        except model_store.StoreError as exc:
            notes.append(f"SyncNet weights unavailable ({str(exc).splitlines()[0]}): Light-ASD sync only")
        models = QCModels(sync_model, load_light_asd(model_store.resolve(asd_weights, store), device))
        shot_list = read_shots(shots_file) if shots_file else detect_shots(video, info=info)
        tracks = list(read_faces(faces_file).tracks) if faces_file else _track_faces(video, shot_list, info, "retinaface_mobilenet0.25", store, device)
        voice = wav_source(to_wav(audio, Path(tmp) / "voice.wav", sample_rate=16000, channels=1), v.fps)
        original = None
        ref_info = None
        if reference is not None:
            ref_info = probe_media(reference)
            original = array_source(audio_16k_memmap(reference, Path(tmp) / "original.f32"), v.fps)
        results = []
        for i, shot in enumerate(shot_list):
            mine = [t for t in tracks if t.shot_id == shot.id]
            render = {"status": "measured" if mine else "unchanged", "reason": None if mine else "no face: nothing to measure",
                      "tracks": [{"id": t.id, "synthesized": t.frames.duration, "untouched": {}} for t in mine]}
            results.append(qc_shot(shot, render, mine, {}, reference or video, video, original, {"": voice}, models, v.fps,
                                   source_info=ref_info or info, output_info=info))
            progress(i + 1, len(shot_list))
        report = QCReport(video.stem, video.name, str(v.fps), QCThresholds(), tuple(results), {**models.signals(), "notes": notes})
        write_qc_report(out, report)
    for note in notes:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    for row in report.rows():
        typer.echo(f"{row['shot']} {row['track'] or '-'}: {row['verdict']}  {row['reason']}")
    typer.echo(f"{out}: {report.counts}")


def model_path(name_or_path: str, store: Optional[Path]) -> Path:
    from lipsync import store as model_store

    return model_store.resolve(name_or_path, store)


def _track_faces(video, shot_list, info, weights, store, device):  # type: ignore[no-untyped-def]
    from lipsync.faces.detect import build_detector
    from lipsync.faces.pipeline import track_film_faces

    detector = build_detector("retinaface", weights=weights, store=store, device=device)
    return [t for r in track_film_faces(video, shot_list, detector, info=info) for t in r.tracks]


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder of the demo job."),
    seconds: int = typer.Option(12, min=3, help="Length of the generated sample film (only without ../shared/data)."),
    generated: bool = typer.Option(False, "--generated", help="Use the generated 3-shot sample even when ../shared/data is there."),
) -> None:
    """Make a sample job and run the whole flow on it: two real speakers taking turns, dubbed in German
    (../shared/data), else a generated 3-shot film.  Lip-syncs when wav2lip_gan is in the model store;
    without it, the run renders the casting preview (preview.mp4) instead of new lips."""
    from dubcore.manifest import write_manifest
    from lipsync import store as model_store

    from .sample import make_demo_job, make_sample_job, shared_data

    def present(name: str) -> bool:
        return model_store.path_for(model_store.get_entry(name)).is_file()

    with _errors():
        data = None if generated else shared_data()
        if data is not None:
            missing = [n for n in ("retinaface_mobilenet0.25", "light_asd") if not present(n)]
            if missing:
                _fail(f"the demo needs {' and '.join(missing)} in the model store: `dub models pull {' '.join(missing)}` "
                      "(`make demo` does it)")
            job = make_demo_job(out / "sample", data)
            typer.echo(f"sample: {data / 'asd-two-face-composite'} (two GRID speakers taking turns), dubbed in German "
                       f"(ALICE on the left, BOB on the right) from {data / 'talking-heads' / 'deyu.wav'}")
        else:
            job = make_sample_job(out / "sample", seconds=seconds)
            typer.echo("note: ../shared/data is absent, so the demo runs on a generated 3-shot film with no face and no "
                       "speech: it shows shots, the dubbed mix and assembly only (no speakers, casting, preview or QC)")
        lipsync = present("wav2lip_gan")
        if lipsync:
            job = job.model_copy(update={"options": job.options.model_copy(update={"lipsync_checkpoint": "wav2lip_gan"})})
        write_manifest(out / "sample" / "manifest.yaml", job)
        job = job.model_copy(update={"output": str((out / "result").resolve())})
        result = _run_flow(job)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"manifest: {out / 'sample' / 'manifest.yaml'}\nresult:   {out / 'result'}")
    if not lipsync:
        preview = out / "result" / "preview.mp4"
        typer.echo("lips: NOT re-rendered: the Wav2Lip weights (wav2lip_gan) are not in the model store, so the film "
                   "carries the dubbed mix over the original picture"
                   + (f"; {preview} shows the casting instead (each face boxed with the voice that would drive it)"
                      if preview.exists() else "")
                   + ". `dub models pull wav2lip_gan` (non-commercial research licence) and run again to lip-sync.")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
