"""Active speaker detection: Light-ASD loads strictly, its inputs follow the reference, and it finds the speaker.

Real weights (../shared/data/weights/light-asd), real RetinaFace tracks, real clips:
a two-face composite with known turns and the GRID talking-face clips.  Heavy
results (tracks, crops, visual embeddings) are computed once per module.
"""

from __future__ import annotations

import glob
import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import SHARED, shared
from dubcore.records import FaceObservation, FaceTrack, ShotList
from dubcore.timebase import FrameRange

LIGHT_ASD = SHARED / "weights" / "light-asd" / "pretrain_AVA_CVPR.model"
TALKSET = SHARED / "weights" / "light-asd" / "finetuning_TalkSet.model"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def asd_model(model_store):
    if not LIGHT_ASD.exists():
        pytest.skip(f"Light-ASD weights missing: {LIGHT_ASD}")
    from lipsync import store
    from lipsync.models.light_asd import load_light_asd

    store.pull("light_asd", model_store, source=LIGHT_ASD)
    return load_light_asd(store.resolve("light_asd", model_store))


def _tracks(video, detector):
    from lipsync.faces.pipeline import track_shot_faces
    from lipsync.media.probe import probe

    info = probe(video)
    v = info.require_video()
    shot = ShotList.from_cuts(str(video), v.fps, v.frame_count, []).shots[0]
    return info, track_shot_faces(video, shot, detector, info=info).tracks


# --------------------------------------------------------------------------- the model


def test_checkpoint_loads_strictly_into_the_architecture(asd_model):
    from lipsync.models.light_asd import LIGHT_ASD_PARAMETERS, load_light_asd

    n_params = sum(p.numel() for p in asd_model.parameters())
    print(f"\nLight-ASD parameters: {n_params:,}")
    assert n_params == LIGHT_ASD_PARAMETERS == 1_021_378
    sd = torch.load(LIGHT_ASD, map_location="cpu", weights_only=True)
    assert sorted(asd_model.ignored_keys) == ["lossV.FC.bias", "lossV.FC.weight"]
    mine = asd_model.state_dict()
    assert set(mine) == {k for k in sd if not k.startswith("lossV.")}
    assert all(torch.equal(mine[k], sd[k]) for k in mine)
    assert sum(v.numel() for v in sd.values()) == 1_026_146  # + BatchNorm statistics + lossV
    if TALKSET.exists():
        assert load_light_asd(TALKSET).ignored_keys == asd_model.ignored_keys


def test_contract_matches_the_model_store_entry(asd_model):
    from lipsync.store import get_entry

    c, meta = asd_model.contract, get_entry("light_asd").meta
    assert (c.face_size, c.face_size) == tuple(meta["face_size"]) and c.face_color == meta["face_color"]
    assert (c.mfcc_dims, c.audio_rate_hz, c.fps) == (meta["mfcc_dims"], meta["audio_rate_hz"], meta["video_fps"])
    assert c.audio_steps_per_frame * c.fps == c.audio_rate_hz and c.samples_per_frame == 640


def test_other_files_are_refused_with_the_reason(tmp_path, asd_model):
    from lipsync.models.light_asd import LightASDCheckpointError, load_light_asd

    sd = {k: v for k, v in asd_model.state_dict().items() if not k.startswith("model.GRU.")}
    torch.save(sd, tmp_path / "partial.model")
    with pytest.raises(LightASDCheckpointError, match="missing keys.*GRU"):
        load_light_asd(tmp_path / "partial.model")
    (tmp_path / "junk.model").write_bytes(b"not a checkpoint")
    with pytest.raises(LightASDCheckpointError, match="junk.model"):
        load_light_asd(tmp_path / "junk.model")


def test_fused_visual_path_equals_the_checkpoint_modules(asd_model):
    faces = torch.rand(2, 12, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        ref = asd_model.visual_frontend(faces, fused=False)
        fused = asd_model.visual_frontend(faces)
    assert ref.shape == fused.shape == (2, 12, 128)
    assert torch.allclose(ref, fused, atol=1e-4, rtol=1e-4)


def test_mfcc_is_python_speech_features_with_the_reference_arguments():
    psf = pytest.importorskip("python_speech_features")
    from lipsync.models.light_asd import mfcc

    rng = np.random.default_rng(1)
    for n in (300, 400, 401, 16000 + 123):
        x = (rng.standard_normal(n) * 0.2).astype(np.float32)
        x[50:250] = 0.0  # digital silence: the eps floor of log energy
        pcm = np.clip(np.round(x.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
        ref = psf.mfcc(pcm, 16000, numcep=13, winlen=0.025, winstep=0.010)
        got = mfcc(x)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-5)


def test_track_audio_is_aligned_four_mfcc_steps_per_frame():
    from lipsync.models.light_asd import mfcc
    from lipsync.speakers.asd import track_mfcc

    rng = np.random.default_rng(2)
    audio = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    whole = mfcc(audio)
    for first, m in ((0, 10), (7, 20), (60, 13)):  # frames at 25 fps: sample 640 * first
        got = track_mfcc(audio, 640 * first, m)
        assert got.shape == (4 * m, 13)
        # Row 0 differs only by the pre-emphasis of the segment's first sample.
        np.testing.assert_allclose(got[1:], whole[4 * first + 1 : 4 * (first + m)], atol=1e-4)
    # Past the end of the audio: silence, never an error.
    tail = track_mfcc(audio, len(audio) - 640, 5)
    assert tail.shape == (20, 13) and np.all(tail[-4:, 0] < -30)


def _reference_crop(frame, x, y, s, cs=0.4):
    """The crop rule written the reference's way: pad the whole frame, slice, resize, gray, centre."""
    import cv2

    bsi = int(s * (1 + 2 * cs))
    padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=110)
    my, mx = y + bsi, x + bsi
    face = padded[int(my - s) : int(my + s * (1 + 2 * cs)), int(mx - s * (1 + cs)) : int(mx + s * (1 + cs))]
    face = cv2.cvtColor(cv2.resize(face, (224, 224)), cv2.COLOR_BGR2GRAY)
    return face[56:168, 56:168]


def test_face_crop_is_the_reference_crop():
    from lipsync.speakers.asd import face_crop

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(288, 360, 3), dtype=np.uint8)
    for x, y, s in ((180.0, 140.0, 60.0), (20.5, 15.2, 40.0), (350.0, 280.0, 55.5), (100.0, 200.0, 150.0), (0.0, 0.0, 10.0)):
        np.testing.assert_array_equal(face_crop(frame, x, y, s), _reference_crop(frame, x, y, s))


def test_box_median_filter_never_shrinks_short_tracks_to_zero():
    from lipsync.speakers.asd import crop_geometry

    obs = tuple(FaceObservation(i, (100.0 + i, 50.0, 160.0 + i, 130.0), None, 0.99) for i in range(4))
    geom = crop_geometry(FaceTrack("t", "shot-0001", FrameRange(0, 4), obs))
    assert np.all(geom[:, 2] >= 39.0)  # half-size 40, never the median of zero padding


def test_tick_frames_map_other_rates_by_time():
    from lipsync.speakers.asd import tick_frames

    assert tick_frames(10, 25).tolist() == list(range(10))
    assert tick_frames(10, 50).tolist() == [1, 3, 5, 7, 9]
    ticks = tick_frames(240, Fraction(24000, 1001))
    assert len(ticks) == 250 and ticks[0] == 0 and ticks[-1] == 239 and np.all(np.diff(ticks) >= 0)


# --------------------------------------------------------------------------- two faces taking turns


@pytest.fixture(scope="module")
def composite(face_detector, asd_model):
    from lipsync.media.audio import load_audio
    from lipsync.speakers.asd import AsdResult, crop_tracks, score_crops

    video = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    info, tracks = _tracks(video, face_detector)
    assert len(tracks) == 2
    left, right = sorted(tracks, key=lambda t: t.observations[0].box[0])
    audio = load_audio(video, 16000)
    crops = crop_tracks(video, tracks, info=info)
    scores = {t.id: score_crops(crops[t.id], audio, 0, asd_model) for t in tracks}
    v = info.require_video()
    result = AsdResult.from_scores(str(video), v.fps, v.frame_count, tracks, scores)
    return {"video": video, "info": info, "left": left, "right": right, "audio": audio, "crops": crops,
            "scores": scores, "result": result}


def _frames_inside(a: float, b: float, fps: int = 25) -> list[int]:
    """Frames whose whole duration lies strictly inside (a, b) seconds."""
    return [f for f in range(int(b * fps) + 1) if f / fps > a and (f + 1) / fps < b]


def test_composite_assigns_each_turn_to_its_speaker(composite):
    result, left, right = composite["result"], composite["left"].id, composite["right"].id
    for who, (a, b) in ((left, (1.00, 2.46)), (right, (3.68, 5.32))):
        frames = _frames_inside(a, b)
        known = np.mean([result.speaker_at(f, speech=True) == who for f in frames])
        alone = np.mean([result.speaker_at(f) == who for f in frames])
        print(f"\nturn {a}-{b} s ({len(frames)} frames): {100 * known:.1f}% to the right face with speech known, "
              f"{100 * alone:.1f}% from the scores alone")
        assert known >= 0.90
        # From the scores alone the first turn's quiet tail (-36..-45 dBFS after 2.1 s) is not speech to the model.
        assert alone >= 0.75
        assert all(result.speaker_at(f) in (who, None) for f in frames)  # never the other face


def test_composite_marks_nobody_in_the_silent_second_before_each_turn(composite):
    result = composite["result"]
    for a, b in ((0.0, 1.0), (2.68, 3.68)):
        frames = _frames_inside(a, b)
        assert frames
        marked = [(f, t.track_id) for f in frames for t in result.tracks if t.is_speaking(f)]
        assert marked == [], f"marked speaking in the silence {a}-{b} s: {marked}"
        assert all(result.speaker_at(f) is None for f in frames)


def test_composite_scores_agree_with_the_reference_run(composite):
    """Per-second means of an independent run of the reference code (SOURCE.txt beside the clip)."""
    reference = {"left": [-2.70, 1.84, -2.80, -3.43, -2.67, -2.85], "right": [-2.82, -1.54, -2.93, -1.63, 1.02, -1.20]}
    for side in ("left", "right"):
        s = composite["scores"][composite[side].id]
        got = [float(s[k * 25 : (k + 1) * 25].mean()) for k in range(6)]
        print(f"\n{side}: {np.round(got, 2).tolist()} (reference {reference[side]})")
        assert np.all(np.sign(got) == np.sign(reference[side]))
        assert np.max(np.abs(np.subtract(got, reference[side]))) < 0.75


def test_per_window_encoders_differ_only_near_window_edges(composite, asd_model):
    """frontend='window' is the reference's evaluation; 'track' (default) shares the encoders across windows."""
    from lipsync.speakers.asd import AsdParams, TrackCrops, score_crops

    full = composite["crops"][composite["left"].id]
    n, durations = 75, (1, 2, 3)
    track = FaceTrack(full.track.id, full.track.shot_id, FrameRange(0, n), full.track.observations[:n])
    crops = TrackCrops(track, full.fps, full.faces[:n], full.ticks[:n])
    a = score_crops(crops, composite["audio"], 0, asd_model, AsdParams(durations=durations))
    b = score_crops(crops, composite["audio"], 0, asd_model, AsdParams(durations=durations, frontend="window"))
    d = np.abs(a - b)
    print(f"\ntrack vs window encoders ({n} frames, {durations} s): mean |d| {d.mean():.3f}, max {d.max():.3f} at frame {d.argmax()}")
    assert d.mean() < 0.15 and d.max() < 1.0
    edges = np.arange(25, n, 25)
    assert np.min(np.abs(edges - int(d.argmax()))) <= 6  # the receptive field of the encoders
    sure = np.abs(a) > 0.8
    assert np.all(np.sign(a[sure]) == np.sign(b[sure]))


def test_a_50fps_video_is_scored_by_time(composite, asd_model, tmp_path):
    """The composite's first 2 s re-timed to 50 fps (every frame twice): the 25 fps scores, interpolated by time."""
    import subprocess

    from lipsync.speakers.asd import score_tracks

    video = tmp_path / "left50.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(composite["video"]), "-vf",
                    "fps=50,crop=360:288:0:0", "-frames:v", "100", "-c:v", "ffv1", "-an", str(video)], check=True)
    box = tuple(np.mean([o.box for o in composite["left"].observations[:50]], axis=0).tolist())

    def still(track_id, n):  # one box throughout: the same crops at both rates
        return FaceTrack(track_id, "shot-0001", FrameRange(0, n), tuple(FaceObservation(k, box, None, 1.0) for k in range(n)))

    at25 = score_tracks(composite["video"], [still("t25", 50)], composite["audio"], 0, asd_model, fps=25)["t25"]
    got = score_tracks(video, [still("t50", 100)], composite["audio"], 0, asd_model, fps=50)["t50"]
    assert got.shape == (100,)
    # Source frame k (centre (k + 0.5) / 50 s) takes the tick scores (centres (j + 0.5) / 25 s) interpolated there.
    want = np.interp((np.arange(100) + 0.5) / 50, (np.arange(50) + 0.5) / 25, at25)
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.abs(got[1::2] - at25).max() > 0.01  # really interpolated, not just repeated


def test_asd_json_round_trip(composite, tmp_path):
    from lipsync.speakers.asd import read_asd

    path = composite["result"].write(tmp_path / "asd.json")
    back = read_asd(path)
    assert back.source == composite["result"].source and back.fps == 25 and back.frame_count == 150
    for a, b in zip(back.tracks, composite["result"].tracks):
        assert a.speaking == b.speaking and a.frames == b.frames
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert back.params["median_seconds"] == 0.2 and back.params["durations"] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------- GRID: own voice vs another's


@pytest.fixture(scope="module")
def grid(face_detector, asd_model):
    from lipsync.media.audio import load_audio
    from lipsync.speakers.asd import crop_tracks, encode_faces

    clips = sorted(glob.glob(str(shared("grid-talking-faces") / "*.mpg")))
    assert len(clips) == 8
    out = []
    for clip in clips:
        info, tracks = _tracks(clip, face_detector)
        track = max(tracks, key=lambda t: t.frames.duration)
        crops = crop_tracks(clip, [track], info=info)[track.id]
        out.append({"name": os.path.basename(clip), "clip": clip, "track": track, "crops": crops,
                    "audio": load_audio(clip, 16000), "visual": encode_faces(crops, asd_model)})
    return out


@pytest.fixture(scope="module")
def grid_margins(grid, asd_model):
    """Per clip: mean score with its own audio, with the next clip's speech, and with that speech 1.5 s later."""
    from lipsync.speakers.asd import score_crops

    rows = []
    for i, g in enumerate(grid):
        other = grid[(i + 1) % len(grid)]["audio"]

        def mean(audio):
            return float(score_crops(g["crops"], audio, 0, asd_model, visual_embed=g["visual"]).mean())

        rows.append((g["name"], mean(g["audio"]), mean(other), mean(np.roll(other, 24000))))
    print("\nclip: own | next clip's speech | same, 1.5 s later")
    for name, own, nxt, late in rows:
        print(f"  {name:<20} {own:+.2f} | {nxt:+.2f} ({own - nxt:+.2f}) | {late:+.2f} ({own - late:+.2f})")
    return rows


def test_grid_own_voice_beats_another_voice_out_of_step(grid_margins):
    for name, own, _nxt, late in grid_margins:
        assert own - late > 0.4, name
    assert np.mean([own - late for _n, own, _x, late in grid_margins]) > 0.8


@pytest.mark.xfail(strict=True, reason=(
    "Light-ASD (AVA weights) scores a GRID face nearly as high with another GRID sentence spoken in step "
    "(same pacing, silence at both ends): measured own - other from -0.37 to +1.06, mean +0.15; it detects "
    "speech-with-moving-lips more than lip sync. A clip-by-clip 0.5 margin holds only with the other "
    "voice out of step (test above)."))
def test_grid_own_voice_beats_the_next_clips_voice_by_half_a_logit(grid_margins):
    for name, own, nxt, _late in grid_margins:
        assert own - nxt > 0.5, name


def test_grid_own_voice_beats_the_next_clips_voice_on_average(grid_margins):
    margins = [own - nxt for _n, own, nxt, _l in grid_margins]
    assert np.mean(margins) > 0.05 and sum(m > 0 for m in margins) >= 5


def test_dub_asd_cli_writes_asd_json(grid, model_store, tmp_path):
    from typer.testing import CliRunner

    from dub.cli import app
    from lipsync.faces.facesfile import write_faces
    from lipsync.speakers.asd import read_asd

    g = grid[-1]  # sbia1a: speech about 0.5-2.3 s
    faces = write_faces(tmp_path / "faces.json", source=g["clip"], fps=25, frame_count=75,
                        shots=[("shot-0001", FrameRange(0, 75))], tracks=[g["track"]])
    out = tmp_path / "asd.json"
    result = CliRunner().invoke(app, ["asd", g["clip"], "--faces", str(faces), "--out", str(out), "--store", str(model_store)])
    assert result.exit_code == 0, result.output
    asd = read_asd(out)
    (t,) = asd.tracks
    assert t.track_id == g["track"].id and len(t.scores) == 75
    assert len(t.speaking) >= 1 and t.speaking[0].start < 25 < 50 < t.speaking[-1].end
    assert asd.model["entry"] == "light_asd"
