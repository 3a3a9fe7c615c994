"""`dub match` and `dub run` cast a film the same way: same shots (the manifest's shot options), same faces,
same speakers.json, on two real GRID sentences cut together."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from conftest import LIGHT_ASD, MOBILENET, shared
from determinism import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from dub.cli import app

runner = CliRunner()




@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory):
    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")
    a, b = shared("grid-talking-faces", "bbaf2n.mpg"), shared("grid-talking-faces", "lwbsza.mpg")
    folder = tmp_path_factory.mktemp("two-sentences")
    film = folder / "two sentences.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(a), "-i", str(b), "-filter_complex",
                    "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]", "-r", "25",
                    "-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-c:a", "pcm_s16le", "-ar", "16000", str(film)],
                   check=True)
    # The dub: the same two sentences' voices, one mixed dialogue stem.
    dub = folder / "dialogue.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(film), "-vn", "-c:a", "pcm_s16le", "-ar", "48000", str(dub)], check=True)
    return film, dub


def test_match_and_run_give_the_same_speakers_json(two_sentences, tmp_path, model_store):
    film, dub = two_sentences
    # Non-default shot options: the cut between the sentences (frame 75) is merged away by min_shot_frames.
    options = {"speakers": "on", "shot_detectors": ["content"], "min_shot_frames": 80, "content_threshold": 20.0,
               "audio_length_policy": "pad", "qc": "off", "cache": False}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"schema": "dub-film/manifest@1", "film": str(film),
                                   "dub": {"language": "es", "dialogue": str(dub)}, "options": options}), encoding="utf-8")
    matched = tmp_path / "match" / "speakers.json"
    matched.parent.mkdir()
    res = runner.invoke(app, ["match", str(job), "--out", str(matched), "--store", str(model_store)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(job), "--out", str(out)])
    assert res.exit_code == 0, res.output
    shots_m = json.loads((matched.parent / "shots.json").read_text())
    shots_r = json.loads((out / "shots.json").read_text())
    assert [s["frames"] for s in shots_m["shots"]] == [s["frames"] for s in shots_r["shots"]] == [[0, 150]]

    def comparable(path):
        data = json.loads(path.read_text())
        for v in data["voices"]:
            v.pop("audio")  # where each tool keeps its temporary voice files
        for d in data["drives"]:
            d.pop("audio")
        return data

    m, r = comparable(matched), comparable(out / "speakers.json")
    assert m == r
    assert m["drives"], "the speaking face is driven"
