"""Dub mix: exact length, resampling, channel placement, and refusal of tracks that do not fit."""

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from dubcore.timebase import samples_for_frames
from lipsync.media.audio import Stem, mix_stems
from lipsync.media.errors import MediaError
from lipsync.media.synth import tone, write_tone

FPS = Fraction(24000, 1001)
FRAMES = 120  # 5.005 s


def test_mix_is_exact_sum_at_film_length(tmp_path):
    n = samples_for_frames(FRAMES, FPS, 48000)
    assert n == 240240
    write_tone(tmp_path / "dia.wav", n - 500, 48000, freq=300, seed=1)  # within one frame (2002 samples)
    write_tone(tmp_path / "me.wav", n, 48000, freq=90, seed=2, channels=2)
    mix = mix_stems([Stem(tmp_path / "dia.wav", "dialogue", gain_db=-6.0), Stem(tmp_path / "me.wav", "me")],
                    tmp_path / "mix.wav", frame_count=FRAMES, fps=FPS, sample_rate=48000, workdir=tmp_path / "w")
    data, sr = sf.read(str(tmp_path / "mix.wav"), dtype="float32", always_2d=True)
    assert (sr, data.shape) == (48000, (n, 2)) and mix.samples == n and mix.channels == 2
    dia = np.zeros(n, np.float32)
    dia[: n - 500] = tone(n - 500, 48000, 300, 1) * np.float32(10 ** (-6 / 20))
    expected = dia[:, None] + tone(n, 48000, 90, 2)[:, None]
    assert np.max(np.abs(data - expected)) < 1e-6
    assert any("500 samples of silence added" in note for note in mix.notes)


def test_stems_are_resampled_and_logged(tmp_path):
    n44 = samples_for_frames(FRAMES, FPS, 44100)
    write_tone(tmp_path / "dia44.wav", n44, 44100, freq=300, seed=1)
    mix = mix_stems([Stem(tmp_path / "dia44.wav", "dialogue")], tmp_path / "mix.wav",
                    frame_count=FRAMES, fps=FPS, sample_rate=48000, workdir=tmp_path / "w")
    data, sr = sf.read(str(tmp_path / "mix.wav"), dtype="float32")
    assert sr == 48000 and len(data) == samples_for_frames(FRAMES, FPS, 48000)
    assert any("resampled from 44100 Hz to 48000 Hz" in note for note in mix.notes)
    ref = tone(len(data), 48000, 300, 1)
    # Same tone, other rate: correlation with the tone synthesised directly at 48 kHz.
    core = slice(1000, len(data) - 1000)
    assert np.corrcoef(data[core], ref[core])[0, 1] > 0.99


@pytest.mark.parametrize("delta_s,word", [(-0.5, "shorter"), (0.4, "longer")])
def test_track_off_by_more_than_a_frame_is_refused(tmp_path, delta_s, word):
    n = samples_for_frames(FRAMES, FPS, 48000) + int(delta_s * 48000)
    write_tone(tmp_path / "dia.wav", n, 48000)
    with pytest.raises(MediaError, match=rf"dia.wav: dub track .* {word} by .* more than one frame.*audio_length_policy"):
        mix_stems([Stem(tmp_path / "dia.wav", "dialogue")], tmp_path / "mix.wav",
                  frame_count=FRAMES, fps=FPS, workdir=tmp_path / "w")
    assert not (tmp_path / "mix.wav").exists()
    mix = mix_stems([Stem(tmp_path / "dia.wav", "dialogue")], tmp_path / "mix.wav", frame_count=FRAMES, fps=FPS,
                    length_policy="pad", workdir=tmp_path / "w")
    assert sf.info(str(tmp_path / "mix.wav")).frames == samples_for_frames(FRAMES, FPS, 48000) == mix.samples
