"""Speaker diarization (embedded backend, offline), RTTM files, DER, and `dub diarize`.

Real recordings from ../shared/data: the pyannote sample call (2 speakers, 30 s,
with overlap) and the two-face GRID composite (2 speakers taking turns, a video).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dubcore.records import SpeakerTurn
from lipsync.speakers.diarize import Diarization, DiarizationError, diarize
from lipsync.speakers.rttm import der, read_rttm, read_uem, write_rttm

from conftest import shared

runner = CliRunner()

# Measured on this machine (CPU, torch 2.8, default DiarizationParams, pyannote collar 0.25 = 0.125 s
# each side, overlap scored; bench/bench_diarize.py prints them):
# sample.wav (UEM = the whole 30 s file): automatic count 2 speakers, DER 0.0043; num_speakers=2: 0.0124.
# dev00.wav (its UEM): automatic count 2 speakers, DER 0.0884 (confusion 0.043, missed 0.042: the 1.4 s
# of overlapped speech, which the bundled segmentation model does not hear); num_speakers=2: 0.0884.
SAMPLE_DER_MEASURED = 0.0043
SAMPLE_DER_MEASURED_2 = 0.0124
DEV00_DER_MEASURED = 0.0884


def overlap_spans(turns, rate: int) -> list[tuple[float, float]]:
    """(start, end) seconds where two speakers or more speak at once."""
    edges = sorted([(t.start_sample, 1) for t in turns] + [(t.end_sample, -1) for t in turns])
    spans, active, last = [], 0, 0
    for at, step in edges:
        if active >= 2 and at > last:
            spans.append((last / rate, at / rate))
        active, last = active + step, at
    return spans


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine torch's default (one per core) spins against
    the other processes and runs these small LSTMs 10-30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sample_diarization(one_torch_thread) -> Diarization:
    return diarize(shared("pyannote-sample", "sample.wav"), backend="embedded")


@pytest.fixture(scope="module")
def dev00_diarization(one_torch_thread) -> Diarization:
    return diarize(shared("pyannote-ami-debug", "dev00.wav"), backend="embedded")


def test_embedded_der_on_pyannote_sample(sample_diarization):
    reference = read_rttm(shared("pyannote-sample", "sample.rttm"), 16000)
    result = sample_diarization
    assert result.backend == "embedded"
    assert result.sample_rate == 16000 and result.num_samples == 480000
    assert result.uri == "sample"
    value = der(reference, result, collar=0.25, skip_overlap=False, uem=(0.0, 30.0))
    assert value < SAMPLE_DER_MEASURED + 0.02, value
    assert len(result.speakers) == 2, result.params["speaker_count"]
    # Turns are sample-exact, sorted, within the file, named SPK00.. in order of first speech.
    turns = result.turns
    assert turns and all(isinstance(t.start_sample, int) and isinstance(t.end_sample, int) for t in turns)
    assert all(0 <= t.start_sample < t.end_sample <= 480000 for t in turns)
    assert [t.start_sample for t in turns] == sorted(t.start_sample for t in turns)
    assert result.speakers[0] == "SPK00" and set(result.speakers) == {f"SPK{i:02d}" for i in range(len(result.speakers))}
    assert [t.id for t in turns] == [f"turn-{i + 1:04d}" for i in range(len(turns))]
    # Silence before the first reference turn (6.69 s) stays silent.
    assert turns[0].start_sample > int(6.3 * 16000)
    # The overlap at 18.05-18.59 s (both speakers) is kept: two turns of different speakers cover 18.3 s.
    at = int(18.3 * 16000)
    assert len({t.speaker for t in turns if t.start_sample <= at < t.end_sample}) == 2


def test_overlapped_speech_of_the_sample_is_output_as_overlap(sample_diarization):
    """The reference has 1.89 s of overlapped speech (5 stretches); the segmentation model hears two
    voices at once for about 2.2 s: the output keeps them, mostly where the reference has them."""
    reference = read_rttm(shared("pyannote-sample", "sample.rttm"), 16000)
    truth = overlap_spans(reference, 16000)
    out = overlap_spans(sample_diarization.turns, 16000)
    total = sum(b - a for a, b in out)
    assert 1.0 < total < 3.5, out
    near = sum(max(0.0, min(b, d + 0.25) - max(a, c - 0.25)) for a, b in out for c, d in truth)
    assert near > 0.6 * total, (out, truth)


def test_num_speakers_is_honoured_on_the_sample(sample_diarization):
    reference = read_rttm(shared("pyannote-sample", "sample.rttm"), 16000)
    sample = shared("pyannote-sample", "sample.wav")
    two = diarize(sample, backend="embedded", num_speakers=2)
    assert len(two.speakers) == 2 and not two.notes
    assert der(reference, two, collar=0.25, uem=(0.0, 30.0)) < SAMPLE_DER_MEASURED_2 + 0.02
    three = diarize(sample, backend="embedded", num_speakers=3)
    assert len(three.speakers) == 3 and not three.notes
    assert len(diarize(sample, backend="embedded", max_speakers=1).speakers) == 1


def test_embedded_der_on_ami_dev00(dev00_diarization):
    reference = read_rttm(shared("pyannote-ami-debug", "debug.development.rttm"), 16000, uri="dev00")
    uem = read_uem(shared("pyannote-ami-debug", "debug.development.uem"), uri="dev00")
    result = dev00_diarization
    assert len(result.speakers) == 2, result.params["speaker_count"]
    d = der(reference, result, collar=0.25, skip_overlap=False, uem=uem, detailed=True)
    assert d["diarization error rate"] < DEV00_DER_MEASURED + 0.02, d
    # MEE009 speaks 1.44-13.31 s and MEE012 13.15-16.92 s: two different speakers at 8 s and 15.5 s.
    at = lambda s: {t.speaker for t in result.turns if t.start_sample <= s * 16000 < t.end_sample}  # noqa: E731
    assert len(at(8.0)) == len(at(15.5)) == 1 and at(8.0) != at(15.5)


@pytest.mark.xfail(strict=True, reason="the bundled segmentation model hears no overlap in dev00 (its second "
                   "speaker scores stay below 0.35), so none is output; the reference has 1.4 s")
def test_overlapped_speech_of_ami_dev00_is_output_as_overlap(dev00_diarization):
    out = overlap_spans(dev00_diarization.turns, 16000)
    assert sum(b - a for a, b in out) > 0.5, out


def test_rttm_round_trip_is_sample_exact(tmp_path):
    rate = 48000
    turns = (
        SpeakerTurn("turn-0001", "SPK00", 0, 48, rate),  # 1 ms
        SpeakerTurn("turn-0002", "SPK01", 321_120, 1_000_032, rate),
        SpeakerTurn("turn-0003", "SPK00", 999_984, 1_440_000, rate),  # overlaps the previous one
        SpeakerTurn("turn-0004", "SPK01", 3 * 3600 * rate, 3 * 3600 * rate + 48_000, rate),  # 3 h in, no drift
    )
    d = Diarization("film_reel-1", rate, turns, "embedded", num_samples=3 * 3600 * rate + 48_000)
    path = write_rttm(tmp_path / "out" / "film.rttm", d)
    lines = path.read_text().splitlines()
    assert lines[1] == "SPEAKER film_reel-1 1 6.690 14.144 <NA> <NA> SPK01 <NA> <NA>"
    assert lines[3] == "SPEAKER film_reel-1 1 10800.000 1.000 <NA> <NA> SPK01 <NA> <NA>"
    assert not list((tmp_path / "out").glob(".*partial*"))
    back = read_rttm(path, rate)
    assert [(t.id, t.speaker, t.start_sample, t.end_sample, t.sample_rate) for t in back] == [
        (t.id, t.speaker, t.start_sample, t.end_sample, t.sample_rate) for t in turns
    ]
    # A bound that is not on a millisecond comes back within half a millisecond.
    odd = Diarization("x", 44100, (SpeakerTurn("turn-0001", "A", 12345, 67891, 44100),), "embedded")
    (t,) = read_rttm(write_rttm(tmp_path / "odd.rttm", odd), 44100)
    assert abs(t.start_sample - 12345) <= 22 and abs(t.end_sample - 67891) <= 22


def test_read_rttm_picks_uri_and_reads_uem():
    rttm = shared("pyannote-ami-debug", "debug.development.rttm")
    with pytest.raises(ValueError, match="several files"):
        read_rttm(rttm, 16000)
    dev00 = read_rttm(rttm, 16000, uri="dev00")
    assert len(dev00) == 9 and {t.speaker for t in dev00} == {"MEE009", "MEE012"}
    assert (dev00[0].start_sample, dev00[0].end_sample) == (23040, 212_992)
    assert read_uem(shared("pyannote-ami-debug", "debug.development.uem"), uri="dev00") == [(0.0, 30.0)]
    # DER of the reference against itself is 0; against nothing, 1 (all missed).
    assert der(dev00, dev00, uem=(0.0, 30.0)) == 0.0
    assert der(dev00, [], uem=(0.0, 30.0)) == pytest.approx(1.0)


def test_silent_file_gives_no_turns(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(16000 * 3, dtype=np.float32), 16000)
    result = diarize(path, backend="embedded")
    assert result.turns == () and result.num_samples == 48000
    out = tmp_path / "silence.rttm"
    write_rttm(out, result)
    assert out.read_text() == ""
    assert read_rttm(out, 16000) == []
    # An array at another rate works the same way.
    assert diarize(np.zeros((44100, 2), dtype=np.float32), 44100).turns == ()


def test_auto_falls_back_to_embedded_with_a_note(tmp_path):
    silent = np.zeros(8000, dtype=np.float32)
    missing = tmp_path / "no-such-pipeline"
    result = diarize(silent, 16000, backend="auto", pyannote_pipeline=str(missing))
    assert result.backend == "embedded"
    assert any("pyannote backend unavailable" in n and "no-such-pipeline" in n for n in result.notes)
    with pytest.raises(DiarizationError, match="no-such-pipeline"):
        diarize(silent, 16000, backend="pyannote", pyannote_pipeline=str(missing))
    plain = diarize(silent, 16000)  # no pipeline, no token: not even tried
    assert plain.backend == "embedded" and any("not tried" in n for n in plain.notes)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="sample_rate is required"):
        diarize(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="num_speakers"):
        diarize(np.zeros(100, dtype=np.float32), 16000, num_speakers=0)
    with pytest.raises(FileNotFoundError, match="nothing-here.wav"):
        diarize("nothing-here.wav")


def test_file_without_audio_names_the_file(tmp_path):
    from lipsync.media.errors import MediaError

    video = tmp_path / "picture_only.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    with pytest.raises(MediaError, match="picture_only.mp4.*no audio stream"):
        diarize(video)
    from dub.cli import app

    res = runner.invoke(app, ["diarize", str(video), "--out", str(tmp_path / "x.rttm")])
    assert res.exit_code == 2
    assert "picture_only.mp4" in res.output and "no audio" in res.output
    assert not (tmp_path / "x.rttm").exists()


def test_dub_diarize_writes_valid_rttm_for_a_video(tmp_path):
    from dub.cli import app

    video = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    out = tmp_path / "turns.rttm"
    res = runner.invoke(app, ["diarize", str(video), "--out", str(out), "--num-speakers", "2", "--backend", "embedded"])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines and all(line.split()[0] == "SPEAKER" and len(line.split()) == 10 for line in lines)
    assert all(line.split()[1] == "grid_two_face_turns" for line in lines)
    turns = read_rttm(out, 16000)
    assert {t.speaker for t in turns} == {"SPK00", "SPK01"}
    assert "turn-0001" in res.output and "backend embedded" in res.output
    # Person A speaks 1.00-2.46 s, person B 3.68-5.32 s (energy VAD ground truth).
    reference = read_rttm(shared("asd-two-face-composite", "grid_two_face_turns.rttm"), 16000)
    assert der(reference, turns, uem=(0.0, 6.0)) < 0.25
