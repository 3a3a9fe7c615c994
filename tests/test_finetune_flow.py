"""``options.finetune``: the dub-film flow tunes the generator on the film's speaking faces, then lip-syncs with it.

Random weights (seeded) in the published layouts stand in for wav2lip_gan.pth and
lipsync_expert.pth (the published files cannot be downloaded here); the face
detector and Light-ASD are the real ones from ../shared/data.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
import yaml

from conftest import LIGHT_ASD, shared
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)


def test_flow_finetunes_on_the_film_then_renders_with_the_tuned_weights(tmp_path):
    if not LIGHT_ASD.exists():
        pytest.skip(f"Light-ASD weights missing: {LIGHT_ASD}")
    from lipsync.models.expert import SyncNetColor
    from lipsync.models.wav2lip import Wav2Lip, load_wav2lip
    from lipsync.speakers.asd import read_asd
    from test_run import _run_in_process

    torch.manual_seed(0)
    init = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}}, init)
    expert = tmp_path / "expert.pth"
    torch.save({"state_dict": SyncNetColor().state_dict(), "global_step": 0, "global_epoch": 0}, expert)
    # bbaf2n frames [20, 58): the speaker's turn (ASD: frames 25-54 of the clip) and a little silence around it.
    film = tmp_path / "film.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(shared("grid-talking-faces", "bbaf2n.mpg")),
                    "-vf", "trim=start_frame=20:end_frame=58,setpts=PTS-STARTPTS", "-af", "atrim=start=0.8:end=2.32,asetpts=PTS-STARTPTS",
                    "-c:v", "libx264", "-crf", "12", "-r", "25", "-c:a", "aac", str(film)], check=True)
    m = tmp_path / "job.yaml"
    m.write_text(yaml.safe_dump({
        "schema": "dub-film/manifest@1", "film": str(film),
        "dub": {"dialogue": str(shared("grid-talking-faces", "lwbsza.mpg"))},
        "options": {"lipsync_checkpoint": str(init), "lipsync_backend": "local", "lipsync_device": "cpu",
                    "audio_length_policy": "pad", "speakers": "off", "qc": "off", "video_codec": "ffv1", "container": "mkv",
                    "finetune": {"steps": 2, "batch_size": 2, "expert": str(expert)}},
    }))
    out = tmp_path / "out"
    result = _run_in_process(m, out)
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads((out / "report.json").read_text())
    ft = report["finetune"]
    # The clips are the frames where Light-ASD says the face speaks (asd.json of this run).
    asd = read_asd(out / "asd.json")
    speaking = sum(r.duration for t in asd.tracks for r in t.speaking)
    assert speaking >= 5
    assert (ft["status"], ft["steps"], ft["frames"], ft["checkpoint"]) == ("trained", 2, speaking, "model/wav2lip_finetuned.pth")
    tuned_path = out / "model" / "wav2lip_finetuned.pth"
    tuned = load_wav2lip(tuned_path).state_dict()
    start = load_wav2lip(init).state_dict()
    assert torch.load(tuned_path, map_location="cpu", weights_only=True)["global_step"] == 2
    assert any(not torch.equal(tuned[k], start[k]) for k in start)  # the weights did move
    shot = report["shots"][0]
    assert shot["status"] != "unchanged"

    # The same job again: the tuned weights come from the cache (byte-identical), so the shot render is reused too.
    out2 = tmp_path / "out2"
    result = _run_in_process(m, out2)
    assert result.exit_code == 0, result.output[-3000:]
    report2 = json.loads((out2 / "report.json").read_text())
    assert report2["finetune"]["status"] == "cached" and report2["finetune"]["key"] == ft["key"]
    assert (out2 / "model" / "wav2lip_finetuned.pth").read_bytes() == tuned_path.read_bytes()
    render1 = json.loads((out / "shots" / "shot-0001" / "shot.json").read_text())["render"]
    render2 = json.loads((out2 / "shots" / "shot-0001" / "shot.json").read_text())["render"]
    assert render1["cache_key"] == render2["cache_key"]
    assert (out / "film.dubbed.mkv").read_bytes() == (out2 / "film.dubbed.mkv").read_bytes()


def test_finetune_without_a_generator_is_refused(tmp_path):
    from dubcore.manifest import JobOptions

    with pytest.raises(ValueError, match="options.finetune needs options.lipsync_checkpoint"):
        JobOptions(finetune={"steps": 10})
