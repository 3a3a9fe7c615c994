"""Shared fixtures: paths to ../shared/data, generated films with known ground truth, an isolated Prefect home."""

from __future__ import annotations

import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

# Isolate Prefect before anything imports it: its own home, a temporary local server.
_PREFECT_HOME = tempfile.mkdtemp(prefix="dub-film-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

_MODEL_STORE = tempfile.mkdtemp(prefix="dub-film-models-")
os.environ["DUB_MODEL_STORE"] = _MODEL_STORE
_RENDER_CACHE = tempfile.mkdtemp(prefix="dub-film-cache-")
os.environ["DUB_CACHE_DIR"] = _RENDER_CACHE  # never the user's ~/.cache

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (expected ../shared/data beside the checkout)")
    return path


def cached_segment(render: dict, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The rendered segment of a shot, from its report entry (``cache_key``): the render cache holds
    the one copy (OUT holds no per-shot segments)."""
    key = render["cache_key"]
    root = Path(cache_dir or os.environ["DUB_CACHE_DIR"])
    return root / "segments" / key[:2] / f"{key}.mkv"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def film_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("films")


@pytest.fixture(scope="session")
def three_shot_film(film_dir: Path):
    """25 fps, 320x240, shots of 30, 25 and 35 frames, with original audio."""
    from lipsync.media.synth import make_film

    return make_film(film_dir / "three_shots.mp4", [30, 25, 35], fps=Fraction(25))


MOBILENET = SHARED / "weights" / "retinaface-mobilenet0.25" / "mobilenet0.25_Final.pth"
LIGHT_ASD = SHARED / "weights" / "light-asd" / "pretrain_AVA_CVPR.model"


@pytest.fixture(scope="session", autouse=True)
def model_store() -> Path:
    """A model store for the session, holding the real RetinaFace MobileNet-0.25 and Light-ASD weights from ../shared/data."""
    from lipsync import store

    if MOBILENET.exists():
        store.pull("retinaface_mobilenet0.25", _MODEL_STORE, source=MOBILENET)
    if LIGHT_ASD.exists():
        store.pull("light_asd", _MODEL_STORE, source=LIGHT_ASD)
    return Path(_MODEL_STORE)


@pytest.fixture(scope="session")
def face_detector(model_store):
    """The real RetinaFace MobileNet-0.25 detector on CPU."""
    if not MOBILENET.exists():
        pytest.skip(f"RetinaFace weights missing: {MOBILENET}")
    from lipsync.faces.detect import build_detector

    return build_detector("retinaface", weights="retinaface_mobilenet0.25", store=model_store)


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
    shutil.rmtree(_RENDER_CACHE, ignore_errors=True)
    shutil.rmtree(_MODEL_STORE, ignore_errors=True)


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory: pytest.TempPathFactory, model_store) -> Path:
    """`dub train dataset` over the composite and four GRID sentences, ``lwbsza`` for validation (real models)."""
    import json

    from typer.testing import CliRunner

    from dub.cli import app

    if not (MOBILENET.exists() and LIGHT_ASD.exists()):
        pytest.skip("RetinaFace / Light-ASD weights missing from ../shared/data/weights")
    root = tmp_path_factory.mktemp("train-dataset")
    names = root / "names.json"
    names.write_text(json.dumps({
        "grid_two_face_turns": {"sides": {"left": "speaker-bbaf2n", "right": "speaker-lwbsza"}},
        "bbaf2n": {"character": "speaker-bbaf2n"},
        "lwbsza": {"character": "speaker-lwbsza"},
        "lbax4n": {"character": "speaker-lbax4n"},
        "id2_vcd_swwp2s": {"character": "speaker-swwp2s"},
    }), encoding="utf-8")
    films = [shared("asd-two-face-composite", "grid_two_face_turns.mp4"), shared("grid-talking-faces", "bbaf2n.mpg"),
             shared("grid-talking-faces", "lwbsza.mpg"), shared("grid-talking-faces", "lbax4n.mpg"),
             shared("grid-talking-faces", "id2_vcd_swwp2s.mpg")]
    out = root / "dataset"
    result = CliRunner().invoke(app, ["train", "dataset", *map(str, films), "--names", str(names), "--val", "lwbsza",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random Wav2Lip weights (seed 0), saved as the published files are: {"state_dict": {"module.<key>": ...}}."""
    import torch

    from lipsync.models.wav2lip import Wav2Lip

    torch.manual_seed(0)
    model = Wav2Lip()
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_random.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "global_step": 0}, path)
    return path
