"""Wav2Lip generator training on a tiny GRID training set, against a frozen random expert (CPU)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import shared
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)
from lipsync.media import FrameReader, probe

GRID = ("bbaf2n.mpg", "lwbsza.mpg")
CROP = (95, 105, 215, 225)  # x1, y1, x2, y2: GRID speakers sit centred; a fixed square around the face
FPS, SR, SIZE = 25, 16000, 96


def _write_clip(video: Path, root: Path, clip_id: str, frames: tuple[int, int] | None = None) -> dict:
    """One clip in the documented format; ``frames=(a, b)`` keeps video frames [a, b) and their audio."""
    import cv2

    x1, y1, x2, y2 = CROP
    crops = [cv2.resize(f[y1:y2, x1:x2], (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in FrameReader(video)]
    a, b = frames or (0, len(crops))
    faces = np.stack(crops[a:b]).astype(np.uint8)
    n = len(faces)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    np.save(root / "clips" / f"{clip_id}.faces.npy", faces)
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-vn", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-"],
                         check=True, capture_output=True).stdout
    audio = np.frombuffer(pcm, np.int16)[a * SR // FPS :]
    want = n * SR // FPS  # exactly N * sample_rate / fps samples (pad the short GRID tail with silence)
    audio = np.pad(audio[:want], (0, max(0, want - len(audio))))
    sf.write(root / "clips" / f"{clip_id}.wav", audio, SR, subtype="PCM_16")
    return {"id": clip_id, "film": video.stem, "character": video.stem[:2], "split": "train", "frames": n,
            "faces": f"clips/{clip_id}.faces.npy", "audio": f"clips/{clip_id}.wav",
            "source": {"shot": "shot-0001", "track": "t0", "film_frames": [0, n], "film_fps": [FPS, 1]}}


def _write_dataset(root: Path, clips: list[dict]) -> Path:
    frames = sum(c["frames"] for c in clips)
    doc = {"schema": "dub-film/dataset@1", "fps": FPS, "sample_rate": SR, "face_size": SIZE, "clips": clips,
           "counts": {"clips": len(clips), "frames": frames}, "hours": {"train": frames / FPS / 3600}}
    (root / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two whole GRID sentences (75 frames each)."""
    root = tmp_path_factory.mktemp("w2l-dataset")
    return _write_dataset(root, [_write_clip(shared("grid-talking-faces", n), root, f"clip{i:03d}") for i, n in enumerate(GRID)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """One 9-frame clip (mid-sentence): its only target window with real audio under all 5 mel windows is
    frames 0-4, so every step trains on the same target (the reference window is one of 4) -- an overfit set."""
    root = tmp_path_factory.mktemp("w2l-tiny")
    return _write_dataset(root, [_write_clip(shared("grid-talking-faces", GRID[0]), root, "mid", frames=(30, 39))])


@pytest.fixture(scope="module")
def expert_ckpt(tmp_path_factory) -> Path:
    """A random expert (seed 0) in the published format, keys ``module.``-prefixed as DataParallel saved them."""
    from lipsync.models.expert import SyncNetColor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("expert") / "expert_random.pth"
    sd = SyncNetColor().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "global_step": 0, "global_epoch": 0}, path)
    return path


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def test_sampler_follows_the_contract(dataset):
    from lipsync.audio.mel import mel_window_start
    from lipsync.train.data import TrainingSet
    from lipsync.train.wav2lip import GeneratorSampler

    ds = TrainingSet(dataset)
    sampler = GeneratorSampler(ds)
    x, indiv, mel, y = sampler.sample(np.random.default_rng(0))
    assert x.shape == (5, 6, 96, 96) and y.shape == (5, 3, 96, 96)
    assert indiv.shape == (5, 1, 80, 16) and mel.shape == (1, 80, 16)
    assert x[:, :3, 48:].max() == 0 and np.array_equal(x[:, :3, :48], y[:, :, :48])
    assert not np.array_equal(x[:, 3:], y)  # the reference window is another window
    np.testing.assert_array_equal(mel, indiv[0])  # the expert reads the first target frame's window
    for clip, n in sampler.clips:  # drawable targets: exactly those with real audio under their last window
        cols = ds.mel(clip).shape[1]
        assert mel_window_start(n - 1 + 4, ds.fps) + 16 <= cols
        assert n == clip.frames - 4 or mel_window_start(n + 4, ds.fps) + 16 > cols


class _Kill(Exception):
    pass


@pytest.fixture(scope="module")
def run(tiny, expert_ckpt, tmp_path_factory):
    """Train on the overfit set, killed after step 3 (checkpoints every 2), then resumed to step 5.

    Returns (folder, records of the killed run, records of the resumed run, the budget-met restart, the resumed result,
    seconds).
    """
    from lipsync.train.wav2lip import train_wav2lip

    folder = tmp_path_factory.mktemp("w2l-run") / "run"
    kw = dict(expert_checkpoint=expert_ckpt, batch_size=1, lr=1e-3, device="cpu", seed=3, checkpoint_every=2)
    first: list[dict] = []

    def killer(rec: dict) -> None:
        first.append(rec)
        if rec.get("step") == 3 and "loss" in rec:
            raise _Kill

    t0 = time.perf_counter()
    with pytest.raises(_Kill):
        train_wav2lip(tiny, folder, steps=5, log=killer, **kw)
    saved = torch.load(folder / "last.pth", map_location="cpu", weights_only=True)
    same = train_wav2lip(tiny, folder, steps=2, **kw)  # budget already met: resumes, trains nothing
    again: list[dict] = []
    res = train_wav2lip(tiny, folder, steps=5, log=again.append, **kw)
    return folder, first, again, saved, same, res, time.perf_counter() - t0


def test_generator_overfits_against_a_frozen_expert(run, expert_ckpt):
    folder, first, again, saved, same, res, seconds = run
    steps = {r["step"]: r for r in first + again if "loss" in r}  # a redone step: the resumed run's line wins
    assert sorted(steps) == [1, 2, 3, 4, 5]
    l1 = [steps[i]["l1"] for i in range(1, 6)]
    times = [r["step_s"] for r in first + again if "loss" in r]
    print(f"\n6 generator steps (batch 1, CPU) + 3 checkpoints + 3 starts: {seconds:.1f} s; "
          f"median step {np.median(times):.2f} s; l1 per step {[round(v, 4) for v in l1]}; "
          f"loss {steps[1]['loss']:.4f} -> {steps[5]['loss']:.4f}; sync {steps[1]['sync']:.4f} -> {steps[5]['sync']:.4f}")
    assert np.mean(l1[-2:]) < 0.7 * np.mean(l1[:2])
    assert all(np.isfinite(r["loss"]) for r in steps.values())
    w = steps[1]  # the non-GAN weighting: (1 - syncnet_wt) * l1 + syncnet_wt * sync
    assert w["loss"] == pytest.approx(0.97 * w["l1"] + 0.03 * w["sync"], rel=1e-5)
    # The expert never moved: every tensor (weights and BatchNorm statistics) bit-identical to the file.
    before = _tensors(expert_ckpt)
    after = res.expert.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k].cpu(), v), k
    assert not any(p.requires_grad for p in res.expert.parameters()) and not res.expert.training
    # Published format; last.pth is the newest step file.
    ck = torch.load(folder / "last.pth", map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer", "global_step", "global_epoch"} <= set(ck) and ck["global_step"] == 5
    assert not any(k.startswith("module.") for k in ck["state_dict"])
    assert sorted(p.name for p in folder.glob("checkpoint_step*.pth")) == [
        "checkpoint_step000000002.pth", "checkpoint_step000000004.pth", "checkpoint_step000000005.pth"]
    lines = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("event") for r in lines if "event" in r] == ["start", "resume", "resume"]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 3, 4, 5]


def test_resume_continues_from_the_last_checkpoint_with_its_optimizer(run):
    folder, first, again, saved, same, res, _ = run
    assert saved["global_step"] == 2  # the kill after step 3 lost step 3, not the checkpoint of step 2
    assert same.resumed_from == 2 and same.global_step == 2 and same.step_seconds == []
    got, want = same.optimizer.state_dict(), saved["optimizer"]
    assert got["param_groups"] == want["param_groups"] and set(got["state"]) == set(want["state"])
    for i, st in want["state"].items():
        for k, v in st.items():
            assert torch.equal(got["state"][i][k], v), (i, k)
    for k, v in saved["state_dict"].items():
        assert torch.equal(same.generator.state_dict()[k], v), k
    assert again[0]["event"] == "resume" and again[0]["step"] == 2 and res.resumed_from == 2
    redo = [r for r in again if "loss" in r]
    assert [r["step"] for r in redo] == [3, 4, 5] and res.global_step == 5
    # Step 3 redone from the step-2 checkpoint computes what the killed run computed (same sample, same state).
    killed3 = next(r for r in first if r.get("step") == 3 and "loss" in r)
    assert redo[0]["l1"] == pytest.approx(killed3["l1"], rel=1e-4)
    assert redo[0]["sync"] == pytest.approx(killed3["sync"], rel=1e-4)


def test_dub_lipsync_loads_the_trained_checkpoint(run, tmp_path):
    from dub.cli import app

    folder = run[0]
    clip = tmp_path / "clip25.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(shared("grid-talking-faces", GRID[0])), "-frames:v", "25",
                    "-c:v", "libx264", "-crf", "12", "-c:a", "aac", "-shortest", str(clip)], check=True)
    out = tmp_path / "out.mp4"
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["lipsync", str(clip), str(shared("grid-talking-faces", GRID[1])), "--out", str(out),
                                      "--checkpoint", str(folder / "last.pth"), "--device", "cpu",
                                      "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    print(f"\ndub lipsync, 25 frames, CPU: {time.perf_counter() - t0:.1f} s")
    src, dst = probe(clip).require_video(), probe(out).require_video()
    assert dst.frame_count == src.frame_count == 25 and (dst.width, dst.height) == (src.width, src.height)


def test_cli_gan_finetune_saves_the_discriminator(run, dataset, expert_ckpt, tmp_path):
    """`dub train wav2lip --gan --init last.pth`: a fine-tune (step 0, fresh optimizer) with the quality discriminator."""
    from dub.cli import app
    from lipsync.models.wav2lip_disc import DISC_STATE_DICT_KEYS, load_disc

    out = tmp_path / "gan"
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, ["train", "wav2lip", str(dataset), "--expert", str(expert_ckpt), "--out", str(out),
                                 "--init", str(run[0] / "last.pth"), "--gan", "--steps", "1", "--batch-size", "1",
                                 "--device", "cpu", "--seed", "0", "--log-every", "1"])
    assert r.exit_code == 0, r.output
    print(f"\n1 GAN step via the CLI (batch 1, CPU, with load and save): {time.perf_counter() - t0:.1f} s")
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["init_checkpoint"] == str(run[0] / "last.pth")
    rec = lines[1]
    assert rec["step"] == 1 and np.isfinite([rec["disc_real"], rec["disc_fake"], rec["perceptual"]]).all()
    assert rec["loss"] == pytest.approx(0.9 * rec["l1"] + 0.03 * rec["sync"] + 0.07 * rec["perceptual"], rel=1e-5)
    for name in ("last.pth", "checkpoint_step000000001.pth", "disc_last.pth", "disc_checkpoint_step000000001.pth"):
        assert (out / name).exists(), name
    g = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert g["global_step"] == 1 and len(g["optimizer"]["state"]) > 0
    d = torch.load(out / "disc_last.pth", map_location="cpu", weights_only=True)
    assert d["global_step"] == 1 and len(d["state_dict"]) == DISC_STATE_DICT_KEYS and "optimizer" in d
    disc = load_disc(out / "disc_last.pth")
    assert all(torch.equal(disc.state_dict()[k], v) for k, v in d["state_dict"].items())
