"""``dub qc``: measure the lip sync of a lip-synced film."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lipsync.faces.detect import DEFAULT_DETECTOR

from .common import _bar, _store_errors, _track_faces, err


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
        tracks = list(read_faces(faces_file).tracks) if faces_file else _track_faces(video, shot_list, info, DEFAULT_DETECTOR, store, device)
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
