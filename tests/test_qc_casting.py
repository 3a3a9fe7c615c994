"""Honest QC: the casting checked against the original's active speakers, and no *pass* without SyncNet.

Unit level: :func:`lipsync.qc.casting.casting_checks` on hand-made ASD results and
drives, :func:`lipsync.qc.report.with_casting` and the report files.

Real data: the two-face composite of ../shared/data/asd-two-face-composite (two
GRID speakers side by side, left speaks 1.00-2.46 s, right 3.68-5.32 s), faces by
RetinaFace, speaking frames by Light-ASD; a casting that re-voices only the left
face (with a random-weight Wav2Lip, no SyncNet weights) is rendered and QC'd:
the right face, which speaks in the original, is flagged, and the render gets
no *pass*.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import LIGHT_ASD, shared
from dubcore.records import FaceObservation, FaceTrack
from dubcore.timebase import FrameRange
from lipsync.qc.casting import REVOICED_NEVER_SPEAKS, SPEAKS_NOT_REVOICED, casting_checks
from lipsync.qc.report import QCReport, QCThresholds, ShotQC, TrackQC, with_casting, write_qc_report
from lipsync.speakers.plan import Drive


def _track(tid: str, a: int, b: int, shot: str = "shot-0001") -> FaceTrack:
    obs = tuple(FaceObservation(f, (10.0, 10.0, 60.0, 60.0), None, 1.0) for f in range(a, b))
    return FaceTrack(f"{shot}/{tid}", shot, FrameRange(a, b), obs)


def _asd(tracks, speaking):
    """An AsdResult whose tracks speak over ``speaking[track_id]`` (frame ranges), scores +1 there and -1 elsewhere."""
    from lipsync.speakers.asd import AsdResult

    scores = {}
    for t in tracks:
        s = np.full(t.frames.duration, -1.0)
        for a, b in speaking.get(t.id, ()):
            s[a - t.frames.start : b - t.frames.start] = 1.0
        scores[t.id] = s
    return AsdResult.from_scores("film.mp4", 25, 200, tracks, scores)


def test_casting_flags_the_skipped_speaker_and_the_wrong_face():
    alice, bob, extra = _track("face-01", 0, 100), _track("face-02", 0, 100), _track("face-03", 50, 100)
    asd = _asd([alice, bob, extra], {alice.id: [(10, 40)], bob.id: [(60, 90)]})
    assert [r.to_list() for r in asd.track(alice.id).speaking] == [[10, 40]]
    # Bob speaks but is not re-voiced; the extra face (never speaking) is re-voiced instead.
    drives = [Drive(alice.id, "shot-0001", "ALICE", "a.wav", (FrameRange(12, 42),)),
              Drive(extra.id, "shot-0001", "BOB", "b.wav", (FrameRange(58, 92),))]
    a, b, x = casting_checks([alice, bob, extra], asd, drives)
    assert (a.issue, a.speaking, a.driven, a.both, a.voice) == (None, 30, 30, 28, "ALICE")  # timed differently: not flagged
    assert (b.issue, b.speaking, b.driven, b.voice) == (SPEAKS_NOT_REVOICED, 30, 0, None)
    assert "speaks in the original (30 frames" in b.reason
    assert (x.issue, x.speaking, x.driven, x.voice) == (REVOICED_NEVER_SPEAKS, 0, 34, "BOB")
    assert "wrong face" in x.reason and "BOB" in x.reason
    # The right casting: nothing flagged.
    right = [drives[0], Drive(bob.id, "shot-0001", "BOB", "b.wav", (FrameRange(58, 92),))]
    assert [c.issue for c in casting_checks([alice, bob, extra], asd, right)] == [None, None, None]
    # No ASD result for a track (or none at all): not judged.
    assert casting_checks([alice], None, [])[0].speaking is None and casting_checks([alice], None, [])[0].issue is None


def _shot(status: str, tracks=(), verdict: str = "pass") -> ShotQC:
    return ShotQC("shot-0001", (0, 100), "00:00:00:00", "00:00:04:00", status, None if tracks else "no face speaks a dubbed voice",
                  tuple(tracks), verdict)


def test_a_shot_left_unchanged_while_its_face_speaks_is_review_not_pass(tmp_path):
    alice, bob = _track("face-01", 0, 100), _track("face-02", 0, 100)
    asd = _asd([alice, bob], {alice.id: [(10, 40)]})
    unchanged = with_casting(_shot("unchanged"), casting_checks([alice, bob], asd, []))  # "never on screen": nothing driven
    assert unchanged.verdict == "review"
    assert [c["track"] for c in unchanged.casting_issues] == [alice.id]
    # The same shot where nobody speaks in the original stays a pass.
    assert with_casting(_shot("unchanged"), casting_checks([alice, bob], _asd([alice, bob], {}), [])).verdict == "pass"
    # A rendered face that never speaks: its track and the shot become review, with the reason; fail stays fail.
    wrong = TrackQC(bob.id, "ALICE", (0, 100), 30, {}, None, None, None, "unverified", ("no sync measurement",))
    shot = with_casting(_shot("rendered", [wrong], "unverified"),
                        casting_checks([alice, bob], asd, [Drive(bob.id, "shot-0001", "ALICE", "a.wav", (FrameRange(10, 40),))]))
    assert shot.verdict == "review" and shot.tracks[0].verdict == "review"
    assert shot.tracks[0].reasons[0] == "no sync measurement" and "never speaks" in shot.tracks[0].reasons[1]
    assert {c["issue"] for c in shot.casting_issues} == {SPEAKS_NOT_REVOICED, REVOICED_NEVER_SPEAKS}
    failed = with_casting(_shot("rendered", [TrackQC(bob.id, "ALICE", (0, 100), 30, {}, None, None, None, "fail", ("x",))], "fail"),
                          casting_checks([bob], asd, [Drive(bob.id, "shot-0001", "ALICE", "a.wav", (FrameRange(10, 40),))]))
    assert failed.verdict == "fail"
    # The report files carry it: JSON per shot and track, a CSV row for the face that was not rendered, the HTML.
    report = QCReport("t", "t.mp4", "25", QCThresholds(), (shot,))
    assert report.counts == {"fail": 0, "review": 1, "unverified": 0, "pass": 0}
    paths = write_qc_report(tmp_path, report)
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["review"] == 1 and data["summary"]["unverified"] == 0
    assert data["shots"][0]["tracks"][0]["casting"]["issue"] == REVOICED_NEVER_SPEAKS
    assert {c["track"]: c["speaking"] for c in data["shots"][0]["casting"]} == {alice.id: 30, bob.id: 0}
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["track"], r["verdict"], r["casting"], r["asd_speaking"], r["driven"]) for r in rows] == [
        (bob.id, "review", REVOICED_NEVER_SPEAKS, "0", "30"), (alice.id, "review", SPEAKS_NOT_REVOICED, "30", "0")]
    page = paths["html"].read_text()
    assert "speaks, not re-voiced" in page and "re-voiced, never speaks" in page and "unverified 0" in page


# --------------------------------------------------------------------------- real: the two-face composite


@pytest.fixture(scope="module")
def composite_qc(tmp_path_factory, face_detector, model_store):
    if not LIGHT_ASD.exists():
        pytest.skip(f"Light-ASD weights missing: {LIGHT_ASD}")
    import torch

    from dubcore.records import ShotList
    from lipsync import store
    from lipsync.faces.pipeline import track_shot_faces
    from lipsync.media.audio import load_audio, to_wav
    from lipsync.media.probe import probe
    from lipsync.models.light_asd import load_light_asd
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync.qc.shots import QCModels, qc_shot, wav_source
    from lipsync.render import LipSyncWorker, ShotJob, render_summary
    from lipsync.speakers.asd import AsdResult, crop_tracks, score_crops

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("qc-casting")
    video = shared("asd-two-face-composite", "grid_two_face_turns.mp4")
    info = probe(video)
    v = info.require_video()
    shot = ShotList.from_cuts(str(video), v.fps, v.frame_count, []).shots[0]
    tracks = track_shot_faces(video, shot, face_detector, info=info).tracks
    assert len(tracks) == 2
    left, right = sorted(tracks, key=lambda t: t.observations[0].box[0])
    asd_model = load_light_asd(store.resolve("light_asd", model_store))
    audio = load_audio(video, 16000)
    crops = crop_tracks(video, tracks, info=info)
    asd = AsdResult.from_scores(str(video), v.fps, v.frame_count, tracks,
                                {t.id: score_crops(crops[t.id], audio, 0, asd_model) for t in tracks})
    # The casting under test: the left face re-voiced over its own turn, the right face (who speaks 3.68-5.32 s) skipped.
    turn = FrameRange(25, 62)
    drives = [Drive(left.id, shot.id, "LEFT", "voice.wav", (turn,))]
    wav = to_wav(video, folder / "voice.wav", sample_rate=16000, channels=1)
    torch.manual_seed(0)
    ckpt = folder / "wav2lip_random.pth"
    torch.save({"state_dict": {f"module.{k}": p for k, p in Wav2Lip().state_dict().items()}}, ckpt)
    worker = LipSyncWorker(str(ckpt), device="cpu")
    render = worker.run(ShotJob(str(video), v.fps, shot.frames, (left,), str(wav), str(folder / "segment.mkv"),
                                speaking={left.id: (turn,)}, shot_id=shot.id))
    summary = render_summary(render)
    models = QCModels(None, asd_model)  # no SyncNet weights
    measured = qc_shot(shot, summary, tracks, {left.id: "LEFT"}, video, render.segment, None, {"LEFT": wav_source(wav, v.fps)},
                       models, v.fps, thumbnails=False, source_info=info)
    checks = casting_checks(tracks, asd, drives)
    return {"left": left, "right": right, "asd": asd, "measured": measured, "checks": checks,
            "shot": with_casting(measured, checks), "summary": summary}


def test_random_wav2lip_render_without_syncnet_gets_no_pass(composite_qc):
    measured = composite_qc["measured"]
    (track,) = measured.tracks
    assert track.track_id == composite_qc["left"].id and track.synthesized > 0
    est = track.asd
    print(f"\nrandom-weight render: {track.verdict}; {track.reasons}; estimate {est['offset']:+d} "
          f"(Light-ASD {est['asd_offset']:+d}, mouth {est['mouth_offset']:+d}), confidence {est['confidence']:.2f}")
    assert est["method"] == "light-asd+mouth-envelope" and len(est["curve"]) == len(est["asd_curve"]) == len(est["mouth_curve"]) == 31
    assert track.verdict != "pass" and measured.verdict != "pass"
    assert track.verdict in ("unverified", "review", "fail")
    if track.verdict == "unverified":
        assert "no SyncNet weights" in track.reasons[0]


def test_casting_that_skips_the_speaking_face_is_flagged(composite_qc, tmp_path):
    left, right, asd = composite_qc["left"], composite_qc["right"], composite_qc["asd"]
    by_id = {c.track_id: c for c in composite_qc["checks"]}
    # Light-ASD of the original: both faces speak in their own turn.
    assert by_id[left.id].speaking >= 25 and by_id[right.id].speaking >= 25, asd.to_dict()["tracks"]
    assert by_id[left.id].issue is None and by_id[left.id].both >= 25
    assert by_id[right.id].issue == SPEAKS_NOT_REVOICED and by_id[right.id].driven == 0
    shot = composite_qc["shot"]
    assert shot.verdict in ("review", "fail")
    assert [c["track"] for c in shot.casting_issues] == [right.id]
    paths = write_qc_report(tmp_path, QCReport("composite", "composite.mp4", "25", QCThresholds(), (shot,)))
    page = paths["html"].read_text()
    assert "speaks, not re-voiced" in page and "mouth R&sup2;" in page and "estimated offset" in page
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["track"], r["casting"]) for r in rows] == [(left.id, ""), (right.id, SPEAKS_NOT_REVOICED)]


def test_markdown_summary_orders_unverified_between_review_and_pass():
    from tasks.qc import qc_markdown

    def shot(i: int, v: str, casting=()) -> ShotQC:
        return ShotQC(f"shot-000{i}", (i * 10, i * 10 + 10), "00:00:00:00", "00:00:00:10", "rendered", None, (), v, {}, casting)

    flag = {"track": "shot-0004/face-01", "shot": "shot-0004", "voice": None, "speaking": 12, "driven": 0, "both": 0,
            "issue": SPEAKS_NOT_REVOICED}
    report = QCReport("t", "t.mp4", "25", QCThresholds(), (shot(1, "pass"), shot(2, "unverified"), shot(3, "fail"), shot(4, "review", (flag,))),
                      {"notes": ["SyncNet weights unavailable"]})
    text = qc_markdown(report, "file:///x.html")
    assert "**1 fail, 1 review, 1 unverified, 1 pass**" in text and "Note: SyncNet weights unavailable" in text
    order = [line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| shot-")]
    assert order == ["shot-0003", "shot-0004", "shot-0002", "shot-0001"]
    assert "shot-0004/face-01: speaks, not re-voiced" in text
