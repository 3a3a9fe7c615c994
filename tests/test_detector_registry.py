"""Face detectors are chosen by the model-store family of their weights (lipsync.faces.detect).

A second detector family registers itself here, in the test, without editing
detect.py: a fake store entry of that family builds through ``build_detector``.
Fast: no torch, no weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

from dubcore.manifest import JobOptions
from lipsync import store as model_store
from lipsync.faces import detect
from lipsync.faces.detect import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Detections,
    FaceDetector,
    UnknownDetectorError,
    build_detector,
    detector_family,
)


class TinyDetector(FaceDetector):
    """One fixed face in every frame."""

    name = "tiny"

    def __init__(self, weights: str, device: str = "cpu", store: Any = None, box: int = 4) -> None:
        self.weights, self.device, self.store, self.box = weights, device, store, box

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        b = float(self.box)
        return [Detections([[0, 0, b, b]], [0.9], np.zeros((1, 5, 2))) for _ in frames]


def _entry(name: str, family: str) -> model_store.WeightsEntry:
    return model_store.WeightsEntry(name=name, family=family, url="https://example.invalid/tiny.bin", sha256="0" * 64,
                                    size=1, license="test", filename=f"{name}.bin")


@pytest.fixture
def tiny_family(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(DETECTORS, "tinyface", TinyDetector)
    monkeypatch.setitem(model_store.REGISTRY, "tinyface_v1", _entry("tinyface_v1", "tinyface"))
    return "tinyface_v1"


def test_an_entry_of_a_new_family_builds_its_detector(tiny_family: str) -> None:
    assert detector_family(tiny_family) == "tinyface"
    det = build_detector(tiny_family, device="cuda:1", store="/models", box=8)
    assert isinstance(det, TinyDetector)
    assert (det.weights, det.device, det.store, det.box) == ("tinyface_v1", "cuda:1", "/models", 8)
    (found,) = det.detect([np.zeros((16, 16, 3), np.uint8)])
    assert len(found) == 1 and found.boxes[0, 2] == 8


def test_an_entry_of_a_family_without_a_detector_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(model_store.REGISTRY, "mystery_v1", _entry("mystery_v1", "mystery"))
    with pytest.raises(UnknownDetectorError, match=r"'mystery_v1'.*family 'mystery'.*known families: retinaface") as info:
        build_detector("mystery_v1")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match=r"'light_asd'.*family 'light_asd'.*known families: retinaface"):
        build_detector("light_asd")  # a real entry, but not a face detector


def test_a_checkpoint_file_is_the_default_family(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "my_detector.pth"
    ckpt.write_bytes(b"x")
    assert detector_family(ckpt) == detect.DEFAULT_FAMILY == "retinaface"
    seen: dict[str, Any] = {}
    monkeypatch.setitem(DETECTORS, "retinaface", lambda **kw: seen.update(kw) or TinyDetector(str(kw["weights"])))
    build_detector(str(ckpt), device="cpu", max_size=320)
    assert seen == {"weights": str(ckpt), "device": "cpu", "max_size": 320}
    with pytest.raises(UnknownDetectorError, match=r"'nowhere\.pth' is neither a known model .* face detectors known: retinaface"):
        build_detector("nowhere.pth")


def test_the_older_form_names_the_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DETECTORS, "tinyface", TinyDetector)
    det = build_detector("tinyface", weights="anything", box=2)
    assert isinstance(det, TinyDetector) and (det.weights, det.box) == ("anything", 2)
    with pytest.raises(ValueError, match="unknown face detector 'nope'; known: retinaface, tinyface"):
        build_detector("nope", weights="x")


def test_one_default_detector_everywhere() -> None:
    assert DEFAULT_DETECTOR == model_store.DEFAULTS["retinaface"] == "retinaface_mobilenet0.25"
    assert model_store.get_entry(DEFAULT_DETECTOR).family in DETECTORS
    assert JobOptions().face_weights == DEFAULT_DETECTOR
