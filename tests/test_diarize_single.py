"""Speaker count of the embedded diarization: one voice stays one speaker; num_speakers / bounds are honoured.

Real recordings from ../shared/data: the talking heads (one speaker each, English) and their German,
French and Japanese dub tracks (one speaker each), the GRID clips (one speaker each; id2_vcd_swwp2s
and pwij3p are the same man), and concatenations of them.  One fixed configuration (the defaults).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from lipsync.media.audio import load_audio
from lipsync.speakers.diarize import Diarization, diarize

from conftest import shared
from determinism import one_torch_thread  # noqa: F401  (autouse: one torch thread)

RATE = 16000
TALKING_HEADS = ["WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4", "deyu.wav", "fayu.wav", "japanese.wav"]
GRID = ["bbaf2n", "brbk7n", "id2_vcd_swwp2s", "lbax4n", "lbbc2a", "lwbsza", "pwij3p", "sbia1a"]


@pytest.fixture(scope="module")
def audio() -> dict[str, np.ndarray]:
    """16 kHz mono float32 audio of every clip, by name."""
    out = {name: load_audio(shared("talking-heads", name), RATE, mono=True) for name in TALKING_HEADS}
    out.update({name: load_audio(shared("grid-talking-faces", f"{name}.mpg"), RATE, mono=True) for name in GRID})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def speaker_at(result: Diarization, seconds: float) -> set[str]:
    at = int(seconds * result.sample_rate)
    return {t.speaker for t in result.turns if t.start_sample <= at < t.end_sample}


@pytest.mark.parametrize("name", TALKING_HEADS)
def test_talking_head_and_dub_tracks_are_one_speaker(audio, name):
    result = diarize(audio[name], RATE, backend="embedded", uri=name)
    assert result.speakers == ("SPK00",), (name, result.speakers, result.params["speaker_count"])
    # ... and the speech is found: these clips talk most of the time.
    assert result.speech_samples() > 0.5 * len(audio[name])


def test_grid_clips_are_one_speaker_each(audio):
    for name in GRID:
        result = diarize(audio[name], RATE, backend="embedded", uri=name)
        assert result.speakers == ("SPK00",), (name, result.speakers)
        assert result.speech_samples() > 1.0 * RATE  # each says a 6-word sentence


def test_short_crops_of_one_voice_are_one_speaker(audio):
    """5-6 s of one voice (held-out footage of this length had come out as 2 and 3 speakers)."""
    crops = {
        "ocasio-cortez 0-5 s": audio["WDA_AlexandriaOcasioCortez_000.mp4"][: 5 * RATE],
        "hill 1-7 s": audio["WDA_KatieHill_000.mp4"][RATE : 7 * RATE],
        "fayu 0-5 s": audio["fayu.wav"][: 5 * RATE],
    }
    for label, wave in crops.items():
        assert diarize(wave, RATE, backend="embedded").speakers == ("SPK00",), label


@pytest.fixture(scope="module")
def one_voice_in_pieces(audio) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Katie Hill's clip cut in 3 pieces with 1.5 s and 0.8 s of silence between (the clustering
    before the voice test gave 4 speakers).  Returns (audio, pauses in seconds)."""
    hill = audio["WDA_KatieHill_000.mp4"]
    pieces = [hill[: 40000], silence(1.5), hill[40000:80000], silence(0.8), hill[80000:]]
    pauses = [(2.5, 4.0), (6.5, 7.3)]
    return np.concatenate(pieces), pauses


def test_one_speaker_cut_in_pieces_with_pauses_is_one_speaker(one_voice_in_pieces):
    wave, pauses = one_voice_in_pieces
    result = diarize(wave, RATE, backend="embedded", uri="hill-pieces")
    assert result.speakers == ("SPK00",), result.params["speaker_count"]
    for a, b in pauses:  # the digital silence between the pieces is nobody's turn
        assert not speaker_at(result, (a + b) / 2)


def test_same_man_in_two_grid_sentences_with_pauses_is_one_speaker(audio):
    wave = np.concatenate([audio["pwij3p"], silence(1.5), audio["id2_vcd_swwp2s"], silence(1.0), audio["pwij3p"]])
    result = diarize(wave, RATE, backend="embedded")
    assert result.speakers == ("SPK00",), result.params["speaker_count"]


def test_two_different_voices_are_still_told_apart(audio):
    """The control: the rule does not just answer 1.  Two women, A (0-8 s), B (8.5-16.5 s), A again."""
    a, b = audio["WDA_AlexandriaOcasioCortez_000.mp4"], audio["WDA_KatieHill_000.mp4"]
    result = diarize(np.concatenate([a, silence(0.5), b, silence(0.5), a]), RATE, backend="embedded")
    assert len(result.speakers) == 2, result.params["speaker_count"]
    first, second, third = speaker_at(result, 4.0), speaker_at(result, 12.5), speaker_at(result, 21.0)
    assert len(first) == len(second) == 1 and first != second and third == first


def test_three_grid_voices_in_turn_are_three_speakers(audio):
    """The man (pwij3p), a woman (lwbsza), the man again, another woman (brbk7n), 3 s each: the
    segmentation model tells the man from the women; the women, whom it hears as one voice, differ
    in their embeddings (0.27 apart)."""
    wave = np.concatenate([audio[k][: 3 * RATE] for k in ("pwij3p", "lwbsza", "pwij3p", "brbk7n")])
    result = diarize(wave, RATE, backend="embedded")
    assert len(result.speakers) == 3, result.params["speaker_count"]
    who = [speaker_at(result, 1.5 + 3 * i) for i in range(4)]
    assert all(len(w) == 1 for w in who) and who[0] == who[2] and len({next(iter(w)) for w in who}) == 3, who


def test_num_speakers_is_honoured_exactly(audio):
    """Four GRID speakers, twice each in turn: the automatic count may merge similar voices, but
    num_speakers=4 gives 4, and each one's speech is one clip's length (about 2.2 s x 2)."""
    clips = [audio[k] for k in ("bbaf2n", "brbk7n", "lbax4n", "lbbc2a")]
    wave = np.concatenate(clips + clips)
    result = diarize(wave, RATE, backend="embedded", num_speakers=4)
    assert len(result.speakers) == 4 and not result.notes, (result.speakers, result.notes)
    # Every clip (3 s) is one speaker, and the two passes agree.
    who = [speaker_at(result, 1.5 + 2.978 * i) for i in range(8)]
    assert all(len(w) == 1 for w in who), who
    assert who[:4] == who[4:] and len({next(iter(w)) for w in who}) == 4, who
    assert len(diarize(wave, RATE, backend="embedded", num_speakers=3).speakers) == 3
    assert len(diarize(wave, RATE, backend="embedded", max_speakers=1).speakers) == 1


def test_impossible_num_speakers_says_why(audio):
    one = audio["bbaf2n"]  # 3 s, one sentence: one stretch of speech to embed
    result = diarize(one, RATE, backend="embedded", num_speakers=3)
    assert len(result.speakers) == 1
    assert any("asked for 3 speakers" in n and "s of speech" in n for n in result.notes), result.notes
    bounded = diarize(one, RATE, backend="embedded", min_speakers=2)
    assert any("asked for at least 2 speakers" in n for n in bounded.notes), bounded.notes


def test_dub_diarize_prints_the_note(tmp_path, audio):
    import soundfile as sf

    from dub.cli import app
    from lipsync.speakers.rttm import read_rttm

    wav = tmp_path / "one_sentence.wav"
    sf.write(str(wav), audio["bbaf2n"], RATE)
    out = tmp_path / "one.rttm"
    res = CliRunner().invoke(app, ["diarize", str(wav), "--out", str(out), "-n", "4", "--backend", "embedded"])
    assert res.exit_code == 0, res.output
    assert "note: asked for 4 speakers" in " ".join(res.output.split())
    assert {t.speaker for t in read_rttm(out, RATE)} == {"SPK00"}


def test_one_voice_with_noise_on_its_second_half_stays_one_speaker(audio):
    """A change of channel moves GE2E embeddings (to 0.25 apart here) but not the segmentation model,
    which hears one voice in the windows across the change: no split on the embeddings alone."""
    wave = audio["deyu.wav"].copy()
    half = len(wave) // 2
    power = float(np.mean(wave**2))
    noise = np.random.default_rng(0).normal(0.0, np.sqrt(power / 10 ** 0.5), len(wave) - half)  # 5 dB SNR
    wave[half:] += noise.astype(np.float32)
    result = diarize(wave, RATE, backend="embedded")
    assert result.speakers == ("SPK00",), result.params["speaker_count"]


def test_cluster_embeddings_divides_only_where_a_split_is_accepted():
    from lipsync.speakers.diarize import cluster_embeddings

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    truth = np.repeat([0, 1, 2], 12)
    X = centres[truth] + 0.35 * rng.normal(size=(36, 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tested = []

    def oracle(a, b):  # different speakers when the two sides' majorities differ
        tested.append((len(a), len(b)))
        return np.bincount(truth[a]).argmax() != np.bincount(truth[b]).argmax()

    labels = cluster_embeddings(X, min_cluster_size=3, accept_split=oracle)
    assert len(set(labels)) == 3 and all(len(set(labels[truth == k])) == 1 for k in range(3)), labels
    assert 4 <= len(tested) <= 8  # two accepted splits, then one refused per speaker (or its outlier-free child)
    assert set(cluster_embeddings(X, min_cluster_size=3, accept_split=lambda a, b: False)) == {0}
    assert len(set(cluster_embeddings(X, min_cluster_size=3, accept_split=lambda a, b: False, min_clusters=2))) == 2
    assert len(set(cluster_embeddings(X, min_cluster_size=3, accept_split=oracle, max_clusters=2))) == 2
    assert len(set(cluster_embeddings(X, min_cluster_size=3, num_clusters=5))) == 5
