"""``dub lipsync``: re-voice every face of a clip with Wav2Lip."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lipsync.faces.detect import DEFAULT_DETECTOR

from .common import _bar, _store_errors, _track_faces, model_path


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
    face_weights: str = typer.Option(DEFAULT_DETECTOR, help="Face detector weights, when detecting."),
    workdir: Optional[Path] = typer.Option(None, help="Keep intermediate files here (default: a temporary folder)."),
    video_codec: str = typer.Option("auto", help="Delivered picture: auto (the clip's codec family), libx264, libx265, prores_ks, ffv1, h264_nvenc, ..."),
    crf: Optional[int] = typer.Option(None, min=0, max=51, help="x264/x265 quality (default: the measured >= 45 dB value)."),
    preset: str = typer.Option("medium", help="x264/x265 speed preset (ultrafast ... veryslow): faster is larger, not worse."),
    dump: Optional[Path] = typer.Option(
        None, "--dump",
        help="Parity dump: write DIR/frame-NNNNNN.npz (face_input, mel, output as the generator saw and gave them) "
             "per lip-synced frame; one sub-folder per track when several faces are driven."),
) -> None:
    """Lip-sync every face of a clip to AUDIO with Wav2Lip; write the clip with that audio."""
    import tempfile

    from dubcore.records import ShotList
    from lipsync.faces.facesfile import read_faces
    from lipsync.media.assemble import assemble, resolve_settings
    from lipsync.media.frames import EncodeSettings
    from lipsync.render.generator import NpzDump
    from lipsync.render.params import LipSyncParams
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
        # Segments are encoded as delivered, so they are joined, not encoded again.
        delivery = resolve_settings(EncodeSettings(codec=video_codec, crf=crf, preset=preset), v, out.suffix)
        segments = {}
        for shot in shot_list:
            shot_tracks = tuple(t for t in tracks if t.shot_id == shot.id)
            if not shot_tracks:
                continue
            job = ShotJob(str(video), v.fps, shot.frames, shot_tracks, str(speech), str(work / f"{shot.id}.mkv"), shot_id=shot.id,
                          settings=delivery, info=info)
            segments[shot.id] = worker.run(job).segment
            progress(shot.frames.end, v.frame_count)
        mix = mix_stems([Stem(Path(audio), "speech")], work / "mix.wav", frame_count=v.frame_count, fps=v.fps,
                        length_policy="pad", workdir=work / "stems")
        assemble(video, shot_list, out, audio=mix.path, segments=segments, settings=delivery, info=info)
    typer.echo(f"{out}: {len(segments)} shot(s) lip-synced, {sum(1 for t in tracks)} face track(s)")
