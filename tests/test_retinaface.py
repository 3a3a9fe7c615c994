"""RetinaFace: strict loading of the published checkpoints, and detection on real faces."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch

from lipsync import store
from lipsync.faces import DETECTORS, Detections, build_detector
from lipsync.faces.retinaface import DetectorOutOfMemoryError, RetinaFaceDetector, nms, prior_boxes
from lipsync.models.retinaface import RetinaFace, RetinaFaceConfig, clean_state_dict, load_retinaface

ASTRONAUT_BOX = np.array([179, 55, 270, 178], dtype=np.float32)  # reference, on the 512x512 image


def shared_data() -> Path:
    """``/work/shared/data`` seen from ``/work/main/tests/<this file>``."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(relative: str) -> Path:
    path = shared_data() / relative
    if not path.is_file():
        pytest.skip(f"shared test data missing: {path}")
    return path


def mnet_path() -> Path:
    return shared("weights/retinaface-mobilenet0.25/mobilenet0.25_Final.pth")


def read_image(relative: str) -> np.ndarray:
    img = cv2.imread(str(shared(relative)), cv2.IMREAD_COLOR)
    assert img is not None, relative
    return img


def video_frames(relative: str, count: int) -> list[np.ndarray]:
    """The first ``count`` frames, BGR; OpenCV first, ffmpeg if OpenCV cannot decode."""
    path = shared(relative)
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if len(frames) == count:
        return frames
    if shutil.which("ffmpeg") is None:
        pytest.skip(f"cannot decode {path}: OpenCV failed and ffmpeg is not installed")
    probe = cv2.VideoCapture(str(path))
    w, h = int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)) or 360, int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)) or 288
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)[:count].copy())


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run this module's forwards on one thread (restored afterwards): on a shared 2-core CI box,
    OpenMP threads spin-waiting against other processes made these tests 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector(mnet_path(), batch_size=16, max_size=640)


@pytest.fixture(scope="module")
def grid_frames() -> list[np.ndarray]:
    return video_frames("grid-talking-faces/bbaf2n.mpg", 32)


# --------------------------------------------------------------------------- MobileNet-0.25 checkpoint


def test_mobilenet_checkpoint_loads_strictly() -> None:
    meta = store.REGISTRY["retinaface_mobilenet0.25"].meta
    raw = clean_state_dict(torch.load(mnet_path(), map_location="cpu", weights_only=True))
    model = RetinaFace(RetinaFaceConfig.from_meta(meta))
    assert set(model.state_dict()) == set(raw)
    assert len(raw) == meta["tensors"]
    assert sum(p.numel() for p in model.parameters()) == meta["parameters"]
    assert sum(t.numel() for t in raw.values()) == meta["state_dict_numel"]
    model.load_state_dict(raw, strict=True)
    assert not load_retinaface(mnet_path(), meta).training


def test_module_prefix_and_wrapped_checkpoints_load(tmp_path: Path) -> None:
    meta = store.REGISTRY["retinaface_mobilenet0.25"].meta
    raw = torch.load(mnet_path(), map_location="cpu", weights_only=True)
    for name, obj in {
        "prefixed.pth": {f"module.{k}": v for k, v in raw.items()},
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in raw.items()}},
    }.items():
        torch.save(obj, tmp_path / name)
        load_retinaface(tmp_path / name, meta)


def test_wrong_checkpoint_names_the_file(tmp_path: Path) -> None:
    raw = torch.load(mnet_path(), map_location="cpu", weights_only=True)
    raw.pop("ClassHead.0.conv1x1.bias")
    torch.save(raw, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*ClassHead\.0\.conv1x1\.bias"):
        load_retinaface(tmp_path / "broken.pth", store.REGISTRY["retinaface_mobilenet0.25"].meta)


# --------------------------------------------------------------------------- detection on real faces


def test_astronaut(detector: RetinaFaceDetector) -> None:
    img = read_image("face-photos/astronaut.png")
    assert img.shape == (512, 512, 3)  # the reference box was taken at this size
    (det,) = detector.detect([img])
    assert len(det) == 1
    assert np.abs(det.boxes[0] - ASTRONAUT_BOX).max() < 10, det.boxes
    assert det.scores[0] > 0.9
    eyes, nose, mouth = det.landmarks[0, :2], det.landmarks[0, 2], det.landmarks[0, 3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # image-left first
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()


def test_camera(detector: RetinaFaceDetector) -> None:
    (det,) = detector.detect([read_image("face-photos/camera.png")])
    assert len(det) == 1 and det.scores[0] > 0.9


def test_grid_frame_box_contains_the_mouth(detector: RetinaFaceDetector, grid_frames: list[np.ndarray]) -> None:
    frame = grid_frames[20]
    assert frame.shape == (288, 360, 3)
    (det,) = detector.detect([frame])
    assert len(det) == 1
    x1, y1, x2, y2 = det.boxes[0]
    for x, y in det.landmarks[0, 3:]:
        assert x1 < x < x2 and y1 < y < y2


def test_batch_of_16_equals_batch_of_1(detector: RetinaFaceDetector, grid_frames: list[np.ndarray]) -> None:
    frames = grid_frames[:16]
    batched = detector.detect(frames)
    single = RetinaFaceDetector(mnet_path(), batch_size=1).detect(frames)
    assert len(batched) == len(single) == 16
    for a, b in zip(batched, single):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_blank_frame_has_no_faces(detector: RetinaFaceDetector) -> None:
    (det,) = detector.detect([np.zeros((240, 320, 3), np.uint8)])
    assert len(det) == 0
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,) and det.landmarks.shape == (0, 5, 2)
    assert detector.detect([]) == []


def test_downscaled_boxes_map_back_to_source_pixels(detector: RetinaFaceDetector) -> None:
    img = read_image("face-photos/astronaut.png")
    (full,) = RetinaFaceDetector(mnet_path(), max_size=None).detect([img])
    (small,) = RetinaFaceDetector(mnet_path(), max_size=320).detect([img])
    assert len(full) == len(small) == 1
    assert np.abs(full.boxes - small.boxes).max() < 5
    assert np.abs(full.landmarks - small.landmarks).max() < 5
    # a 1080p frame holding the astronaut at 2x, downscaled to 640x360 by default
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    canvas[30:1054, 600:1624] = cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    (big,) = detector.detect([canvas])
    assert len(big) == 1
    assert np.abs(big.boxes[0] - (ASTRONAUT_BOX * 2 + [600, 30, 600, 30])).max() < 16


def test_mixed_sizes_keep_their_order(detector: RetinaFaceDetector, grid_frames: list[np.ndarray]) -> None:
    img = read_image("face-photos/astronaut.png")
    blank = np.zeros((100, 100, 3), np.uint8)
    dets = detector.detect([grid_frames[0], img, blank, grid_frames[1]])
    assert [len(d) for d in dets] == [1, 1, 0, 1]
    assert np.abs(dets[1].boxes[0] - ASTRONAUT_BOX).max() < 10


def test_bad_input_is_named(detector: RetinaFaceDetector) -> None:
    with pytest.raises(ValueError, match=r"frame 1 .*uint8 BGR"):
        detector.detect([np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)])


def test_out_of_memory_names_batch_size(detector: RetinaFaceDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    local = RetinaFaceDetector(mnet_path(), batch_size=8)
    monkeypatch.setattr(local, "model", boom)
    with pytest.raises(DetectorOutOfMemoryError, match=r"batch_size=8.*lower batch_size \(e\.g\. batch_size=4\)"):
        local.detect([np.zeros((64, 64, 3), np.uint8)])


def test_registry_builds_the_detector() -> None:
    assert "retinaface" in DETECTORS
    det = build_detector("retinaface", weights=mnet_path(), max_size=320)
    assert isinstance(det, RetinaFaceDetector) and det.entry.name == "retinaface_mobilenet0.25"
    assert det.describe()["max_size"] == 320
    with pytest.raises(ValueError, match="known: retinaface"):
        build_detector("nope")


# --------------------------------------------------------------------------- priors and NMS


def test_prior_order_and_count() -> None:
    pri = prior_boxes((64, 96), [[10, 20], [32, 64], [128, 256]], [8, 16, 32])
    assert pri.shape == ((8 * 12 + 4 * 6 + 2 * 3) * 2, 4)
    torch.testing.assert_close(pri[0], torch.tensor([4 / 96, 4 / 64, 10 / 96, 10 / 64]))
    torch.testing.assert_close(pri[1], torch.tensor([4 / 96, 4 / 64, 20 / 96, 20 / 64]))
    torch.testing.assert_close(pri[2], torch.tensor([12 / 96, 4 / 64, 10 / 96, 10 / 64]))  # next column
    torch.testing.assert_close(pri[8 * 12 * 2], torch.tensor([8 / 96, 8 / 64, 32 / 96, 32 / 64]))  # level 2


def test_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [3, 2]
    assert nms(boxes, scores, 0.99).tolist() == [3, 1, 0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


def test_detections_are_read_only() -> None:
    d = Detections(np.ones((1, 4)), [0.9], np.zeros((1, 5, 2)))
    with pytest.raises(ValueError):
        d.boxes[0, 0] = 5
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Detections(np.ones((1, 3)), [0.9], np.zeros((1, 5, 2)))


# --------------------------------------------------------------------------- ResNet-50 (ternaus) layout


def ternaus_resnet50_keys() -> set[str]:
    """State-dict keys of ternaus/retinaface's ``RetinaFace(name="Resnet50", ...)``, from its module names:
    ``body`` = torchvision resnet50 through ``layer4`` (IntermediateLayerGetter), ``fpn.output1..3/merge1..2``
    and ``ssh1..3.{conv3X3,conv5X5_1,conv5X5_2,conv7X7_2,conv7x7_3}`` as conv+BN Sequentials, and
    ``ClassHead/BboxHead/LandmarkHead`` ModuleLists of ``conv1x1``."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def conv_bn(prefix: str, conv: str = "0", norm: str = "1") -> list[str]:
        return [f"{prefix}{conv}.weight"] + [f"{prefix}{norm}.{s}" for s in bn]

    keys = conv_bn("body.", "conv1", "bn1")
    for layer, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            p = f"body.layer{layer}.{b}."
            for c in (1, 2, 3):
                keys += conv_bn(p, f"conv{c}", f"bn{c}")
            if b == 0:
                keys += conv_bn(p + "downsample.")
    for name in ("output1", "output2", "output3", "merge1", "merge2"):
        keys += conv_bn(f"fpn.{name}.")
    for i in (1, 2, 3):
        for name in ("conv3X3", "conv5X5_1", "conv5X5_2", "conv7X7_2", "conv7x7_3"):
            keys += conv_bn(f"ssh{i}.{name}.")
    for head in ("ClassHead", "BboxHead", "LandmarkHead"):
        for i in range(3):
            keys += [f"{head}.{i}.conv1x1.weight", f"{head}.{i}.conv1x1.bias"]
    return set(keys)


R50_META = store.REGISTRY["retinaface_resnet50"].meta


@pytest.fixture(scope="module")
def resnet_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights saved the way the published release stores them: ``torch.save(state_dict)``
    as ``retinaface_resnet50_2020-07-20.pth``, the only member of ``..._2020-07-20-f168fae3c.zip``."""
    torch.manual_seed(0)
    model = RetinaFace(RetinaFaceConfig.from_meta(R50_META))
    d = tmp_path_factory.mktemp("r50")
    member = d / R50_META["archive_member"]
    torch.save(model.state_dict(), member)
    archive = d / Path(store.REGISTRY["retinaface_resnet50"].url).name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.write(member, member.name)
    member.unlink()
    return archive


def test_resnet50_keys_match_the_published_layout() -> None:
    model = RetinaFace(RetinaFaceConfig.from_meta(R50_META))
    assert set(model.state_dict()) == ternaus_resnet50_keys()


def test_resnet50_body_matches_torchvision_names() -> None:
    tv = pytest.importorskip("torchvision")
    with torch.device("meta"):
        ref = {f"body.{k}" for k in tv.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    mine = {k for k in RetinaFace(RetinaFaceConfig.from_meta(R50_META)).state_dict() if k.startswith("body.")}
    assert mine == ref


def test_resnet50_release_format_pulls_loads_and_runs(tmp_path: Path, resnet_archive: Path) -> None:
    root = tmp_path / "store"
    store.pull("retinaface_resnet50", root, source=resnet_archive, allow_unverified=True)
    # resolved by name from the store, loaded strictly (load_retinaface), RGB/ImageNet input path
    det = RetinaFaceDetector("retinaface_resnet50", store=root, max_size=96)
    assert det.entry.name == "retinaface_resnet50" and det.model.config.backbone == "resnet50"
    h, w = 64, 96
    with torch.inference_mode():
        loc, conf, landms = det.model(torch.zeros(2, 3, h, w))
    p = prior_boxes((h, w), R50_META["min_sizes"], R50_META["steps"]).shape[0]
    assert p == (8 * 12 + 4 * 6 + 2 * 3) * 2
    assert loc.shape == (2, p, 4) and conf.shape == (2, p, 2) and landms.shape == (2, p, 10)
    (out,) = det.detect([np.full((120, 160, 3), 128, np.uint8)])
    assert out.boxes.shape[1:] == (4,) and out.landmarks.shape[1:] == (5, 2)
