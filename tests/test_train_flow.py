"""The ``dub-film-train`` flow on Prefect's local engine: expert then generator on the built set, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from determinism import deterministic_torch  # noqa: F401  (autouse: one thread, deterministic kernels, seeds)


def test_train_flow_trains_expert_then_generator_and_resumes(built_dataset: Path, tmp_path: Path) -> None:
    from flows.train import dub_film_train
    from lipsync.models.expert import load_expert
    from lipsync.models.wav2lip import load_wav2lip

    out = tmp_path / "run"
    kw = dict(output=str(out), dataset=str(built_dataset), expert_steps=2, expert_batch_size=4, expert_width=0.125,
              wav2lip_steps=1, wav2lip_batch_size=1, checkpoint_every=1, device="cpu")
    result = dub_film_train(**kw)
    assert result["expert"] == "expert/last.pth" and result["wav2lip"] == "wav2lip/last.pth"
    expert = load_expert(out / "expert" / "last.pth")  # the generator was trained against this narrow expert
    assert expert.width == 0.125
    summary = json.loads((out / "expert" / "expert.json").read_text())
    assert summary["global_step"] == 2 and summary["resumed_from"] is None
    assert load_wav2lip(out / "wav2lip" / "last.pth") is not None
    assert torch.load(out / "wav2lip" / "last.pth", map_location="cpu", weights_only=True)["global_step"] == 1
    # A second run of the same parameters (e.g. after a crash, or to train longer) continues from the checkpoints:
    # with the same step totals there is nothing left to do.
    before = (out / "wav2lip" / "last.pth").read_bytes()
    dub_film_train(**{**kw, "expert_steps": 3})
    summary = json.loads((out / "expert" / "expert.json").read_text())
    assert (summary["resumed_from"], summary["steps_run"], summary["global_step"]) == (2, 1, 3)
    assert (out / "wav2lip" / "last.pth").read_bytes() == before


def test_train_flow_needs_films_or_a_dataset(tmp_path: Path) -> None:
    import pytest

    from flows.train import dub_film_train

    with pytest.raises(ValueError, match="give `films`"):
        dub_film_train(output=str(tmp_path / "x"))
