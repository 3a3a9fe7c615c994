"""``dub asd``, ``dub diarize``, ``dub match`` and ``dub preview``: who speaks, and who dubs whom."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lipsync.faces.detect import DEFAULT_DETECTOR

from .common import _bar, _errors, _fail, _model_store_env, _store_errors, _track_faces, err


def asd(
    video: Path = typer.Argument(..., help="The film or clip."),
    out: Path = typer.Option(..., "--out", "-o", help="asd.json to write."),
    faces_file: Optional[Path] = typer.Option(None, "--faces", help="faces.json of the video (default: detect and track faces now)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio to score against, starting at frame 0 (default: the video's own)."),
    weights: str = typer.Option("light_asd", help="Light-ASD weights: a model-store entry or a checkpoint path."),
    store: Optional[Path] = typer.Option(None, help="Model store folder."),
    shots_file: Optional[Path] = typer.Option(None, "--shots", help="shots.json, when detecting faces (default: detect shots now)."),
    face_weights: str = typer.Option(DEFAULT_DETECTOR, help="Face detector weights, when detecting."),
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
