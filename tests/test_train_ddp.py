"""Data-parallel training under torchrun, on CPU (gloo): two ranks, one run folder written by rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from prefect_server import free_port
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)


def test_expert_trains_data_parallel_under_torchrun(built_dataset: Path, tmp_path: Path) -> None:
    from lipsync.models.expert import load_expert
    from lipsync.train.data import TrainingSet
    from lipsync.train.expert import ExpertSampler, iter_log

    out = tmp_path / "ddp"
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "dub", "train", "expert", str(built_dataset), "--out", str(out), "--steps", "3", "--width", "0.0625",
           "--batch-size", "8", "--log-every", "1", "--checkpoint-every", "2", "--eval-samples", "16", "--device", "cpu"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "expert.json").read_text())
    assert (summary["world_size"], summary["global_step"]) == (2, 3)
    # global_epoch counts the samples of both ranks: 3 steps x 8 pairs x 2 ranks over the training windows.
    windows = len(ExpertSampler(TrainingSet(built_dataset), "train"))
    assert summary["global_epoch"] == 3 * 8 * 2 // windows
    assert [r["step"] for r in iter_log(out)] == [1, 2, 3]  # one log, rank 0's
    assert proc.stdout.count("in-sync vs off-sync accuracy") == 1
    assert sorted(p.name for p in out.glob("*.pth")) == ["checkpoint_step000000002.pth", "checkpoint_step000000003.pth",
                                                         "last.pth"]
    model = load_expert(out / "last.pth")
    saved = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert saved["config"]["world_size"] == 2 and not any(k.startswith("module.") for k in saved["state_dict"])
    assert model.width == 0.0625
