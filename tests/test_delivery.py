"""The delivered film: the master's codec family, >= 45 dB on unchanged shots, SAR, colour and language kept."""

import json
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from conftest import psnr
from dubcore.manifest import DubJob, DubTracks, JobOptions
from lipsync.media import FrameReader, probe
from lipsync.media.assemble import assemble, write_segment
from lipsync.media.frames import DELIVERY_CRF, EncodeSettings, delivery_settings
from lipsync.media.language import container_language, iso639_2, same_language
from lipsync.media.synth import write_tone
from lipsync.pipeline import encode_settings
from lipsync.shots import detect_shots
from dubcore.timebase import samples_for_frames

SOURCES = {
    # name: (encoder args, container, expected codec_name)
    "h264": (["-c:v", "libx264", "-crf", "20", "-preset", "veryfast", "-pix_fmt", "yuv420p"], "mp4", "h264"),
    "hevc": (["-c:v", "libx265", "-crf", "24", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
              "-x265-params", "log-level=error"], "mp4", "hevc"),
    "prores": (["-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le"], "mov", "prores"),
}


def _ffprobe_streams(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)["streams"]


@pytest.fixture(scope="module", params=sorted(SOURCES))
def master(request, tmp_path_factory):
    """2 s, 25 fps, 320x240 anamorphic (SAR 4:3), BT.709-tagged, two shots (cut at 25), with audio."""
    kind = request.param
    args, ext, _ = SOURCES[kind]
    d = tmp_path_factory.mktemp(f"deliver-{kind}")
    path = d / f"master {kind}.{ext}"
    graph = ("[1:v]trim=end_frame=25,setpts=PTS-STARTPTS[b];[0:v][b]concat=n=2:v=1,setsar=4/3,"
             "noise=alls=4:allf=t:all_seed=7[v]")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1",
                    "-f", "lavfi", "-i", "mandelbrot=s=320x240:r=25", "-f", "lavfi", "-i", "sine=d=2",
                    "-filter_complex", graph, "-map", "[v]", "-map", "2:a", *args,
                    "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv",
                    "-c:a", "aac" if ext == "mp4" else "pcm_s16le", "-shortest", str(path)], check=True)
    return kind, path


def test_delivery_follows_the_master(tmp_path, master):
    kind, path = master
    info = probe(path)
    src = info.require_video()
    assert src.codec == SOURCES[kind][2] and src.sample_aspect_ratio == "4:3"
    shots = detect_shots(path, info=info, min_shot_frames=5)
    assert shots.cuts == [25]
    first, second = shots.shots
    # Shot 2 re-rendered (inverted, lossless segment); shot 1 comes from the master untouched.
    inverted = [np.iinfo(f.dtype).max - f if kind != "prores" else (1023 - f) for f in
                FrameReader(path, frames=second.frames, pix_fmt=src.pix_fmt, info=info)]
    seg = write_segment(tmp_path / "seg.mkv", iter(inverted), like=src, count=second.frames.duration)
    write_tone(tmp_path / "mix.wav", samples_for_frames(src.frame_count, src.fps, 48000), 48000)
    ext = SOURCES[kind][1]
    job = DubJob(film=str(path), dub=DubTracks(dialogue=str(tmp_path / "mix.wav"), language="es"),
                 options=JobOptions(container=ext))
    settings = encode_settings(job)  # what the flow passes today: 'auto', resolved against the film by assemble
    assert settings.codec == "auto" and settings.audio_language == "es"
    out = tmp_path / f"film.dubbed.{ext}"
    result = assemble(path, shots, out, audio=tmp_path / "mix.wav", segments={second.id: seg}, settings=settings, info=info)
    expected_encoder = {"h264": "libx264", "hevc": "libx265", "prores": "prores_ks"}[kind]
    assert result.settings.codec == expected_encoder
    assert encode_settings(job, info).codec == expected_encoder  # resolved up front when the master is known

    video, audio = [s for s in _ffprobe_streams(out) if s["codec_type"] == "video"][0], \
        [s for s in _ffprobe_streams(out) if s["codec_type"] == "audio"][0]
    assert video["codec_name"] == SOURCES[kind][2]
    if kind == "hevc":
        assert video["codec_tag_string"] == "hvc1"
    if kind == "prores":
        assert video["profile"] == "HQ"
    assert video["sample_aspect_ratio"] == "4:3"
    tags = ("color_primaries", "color_transfer", "color_space", "color_range")
    assert tuple(video.get(k, "unknown") for k in tags) == tuple(getattr(src, k) or "unknown" for k in tags)
    if kind != "prores":  # (prores_ks in MOV leaves the master untagged: nothing to keep)
        assert tuple(video[k] for k in tags) == ("bt709", "bt709", "bt709", "tv")
    assert audio["tags"]["language"] == "spa" and same_language(audio["tags"]["language"], job.dub.language)
    o = probe(out).require_video()
    assert (o.frame_count, o.fps, o.width, o.height, o.pix_fmt) == (src.frame_count, src.fps, src.width, src.height, src.pix_fmt)

    # Unchanged shot: every frame >= 45 dB PSNR against the master (its own Y'CbCr planes).
    worst = min(psnr(a, b) if a.dtype == np.uint8 else _psnr16(a, b, 1023)
                for a, b in zip(FrameReader(path, frames=first.frames, pix_fmt=src.pix_fmt, info=info),
                                FrameReader(out, frames=first.frames, pix_fmt=src.pix_fmt)))
    assert worst >= 45, worst
    ratio = out.stat().st_size / path.stat().st_size
    print(f"{kind}: delivered {out.stat().st_size} bytes, master {path.stat().st_size} ({ratio:.2f}x), "
          f"worst unchanged frame {worst:.1f} dB")


def _psnr16(a, b, peak):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def test_explicit_codec_overrides_the_master(tmp_path):
    path = tmp_path / "hevc.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=0.4",
                    "-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p", str(path)], check=True)
    info = probe(path)
    shots = detect_shots(path, info=info)
    job = DubJob(film=str(path), dub=DubTracks(dialogue=str(path)), options=JobOptions(video_codec="libx264", crf=18))
    s = encode_settings(job, info)
    assert (s.codec, s.crf) == ("libx264", 18)
    out = tmp_path / "out.mp4"
    assemble(path, shots, out, audio=None, settings=s, info=info)
    assert [x["codec_name"] for x in _ffprobe_streams(out)] == ["h264"]


def test_delivery_settings_rules():
    from lipsync.media.probe import VideoStream

    def stream(codec, profile=None):
        return VideoStream(0, codec, 64, 64, "yuv420p", Fraction(25), 10, 0, False, profile=profile)

    assert delivery_settings(stream("h264"), ".mp4").codec == "libx264"
    assert delivery_settings(stream("hevc"), "mov").codec == "libx265"
    assert delivery_settings(stream("hevc"), ".mp4").args("yuv420p")[:4] == ["-c:v", "libx265", "-crf", str(DELIVERY_CRF["libx265"])]
    p = delivery_settings(stream("prores", "LT"), ".mov")
    assert (p.codec, p.profile) == ("prores_ks", "LT") and ["-profile:v", "1"] == p.args("yuv422p10le")[2:4]
    assert delivery_settings(stream("prores"), ".mp4").codec == "libx264"  # MP4 cannot hold ProRes
    assert delivery_settings(stream("ffv1"), ".mkv").codec == "ffv1"
    assert delivery_settings(stream("mpeg2video"), ".mp4").codec == "libx264"  # others: H.264
    assert delivery_settings(stream("hevc"), ".mp4", codec="prores_ks").codec == "prores_ks"
    assert delivery_settings(stream("h264"), ".mp4", crf=4).crf == 4
    with pytest.raises(Exception, match="resolved against the source"):
        EncodeSettings(codec="auto").args("yuv420p")


def test_language_tags():
    assert iso639_2("es") == "spa" and iso639_2("fr-CA") == "fra" and iso639_2("pt-BR") == "por"
    assert container_language("fr-CA", ".mkv") == "fre" and container_language("fr-CA", "mp4") == "fra"
    assert container_language("de", "mov") == "deu" and iso639_2("ger") == "deu" and iso639_2("yue") == "yue"
    assert same_language("spa", "es") and not same_language("es", "pt")
    with pytest.raises(ValueError, match="dub.language"):
        iso639_2("xx")
