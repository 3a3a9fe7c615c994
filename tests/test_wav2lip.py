"""Wav2Lip generator: published layout (counts, strict loading of every checkpoint form), contract, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from lipsync import store
from lipsync.audio.mel import DEFAULT_MEL
from lipsync.models.wav2lip import (
    WAV2LIP_PARAMETERS,
    WAV2LIP_STATE_DICT_KEYS,
    Wav2Lip,
    Wav2LipCheckpointError,
    Wav2LipContract,
    checkpoint_format,
    load_wav2lip,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The model runs on one CPU thread here (the machine is shared); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def seeded() -> Wav2Lip:
    """Random weights from seed 0, with non-trivial BatchNorm statistics so buffers are checked too."""
    torch.manual_seed(0)
    model = Wav2Lip()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1000)
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    c = Wav2Lip.contract
    audio = torch.randn((2, *c.audio_shape), generator=g)
    face = torch.rand((2, *c.face_shape), generator=g)
    face[:, :3, c.mask_row :, :] = 0.0
    return audio, face


@pytest.fixture(scope="module")
def expected(seeded: Wav2Lip, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return seeded(*inputs)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def published(seeded: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded weights written the way the authors' training script saves them."""
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth"
    sd = {f"module.{k}": v for k, v in seeded.state_dict().items()}
    torch.save({"state_dict": sd, "optimizer": {}, "global_step": 0}, path)
    return path


# --------------------------------------------------------------------------- layout


def test_parameter_and_key_counts() -> None:
    model = Wav2Lip()
    assert sum(p.numel() for p in model.parameters()) == WAV2LIP_PARAMETERS == 36_298_035
    sd = model.state_dict()
    # 202 parameter tensors + 50 BatchNorms x (running_mean, running_var, num_batches_tracked).
    assert len(sd) == WAV2LIP_STATE_DICT_KEYS == 352
    assert len(list(model.parameters())) == 202
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 50


def test_published_key_names() -> None:
    sd = Wav2Lip().state_dict()
    assert tuple(sd["face_encoder_blocks.0.0.conv_block.0.weight"].shape) == (16, 6, 7, 7)
    assert tuple(sd["audio_encoder.0.conv_block.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(sd["audio_encoder.12.conv_block.1.running_var"].shape) == (512,)
    assert tuple(sd["face_decoder_blocks.1.0.conv_block.0.weight"].shape) == (1024, 512, 3, 3)  # ConvTranspose2d
    assert tuple(sd["face_decoder_blocks.6.2.conv_block.1.weight"].shape) == (64,)
    assert tuple(sd["output_block.0.conv_block.0.weight"].shape) == (32, 80, 3, 3)
    assert tuple(sd["output_block.1.weight"].shape) == (3, 32, 1, 1)
    assert "output_block.1.bias" in sd
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("face_encoder_blocks.")) == 6
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("audio_encoder.")) == 12


def test_forward_shape_and_range(expected: torch.Tensor) -> None:
    c = Wav2Lip.contract
    assert tuple(expected.shape) == (2, c.out_channels, c.face_size, c.face_size) == (2, 3, 96, 96)
    assert float(expected.min()) >= 0.0 and float(expected.max()) <= 1.0


def test_contract() -> None:
    c = Wav2Lip.contract
    assert isinstance(c, Wav2LipContract) and c is Wav2Lip().contract
    assert (c.face_size, c.mask_row, c.color_order, c.value_range) == (96, 48, "BGR", (0.0, 1.0))
    assert (c.mel_step, c.n_mels, c.sample_rate, c.hop_length) == (16, 80, 16000, 200)
    assert c.mel_steps_per_second == 80 and c.mel is DEFAULT_MEL
    assert c.face_shape == (6, 96, 96) and c.audio_shape == (1, 80, 16)
    # The training contract: floor mel window starts, bilinear face resize, truncated output.
    assert (c.window_rounding, c.resize, c.output) == ("floor", "linear", "truncate")
    other = c.with_options(window_rounding="round", resize="area", output="round")
    assert (other.window_rounding, other.resize, other.output) == ("round", "area", "round") and c.resize == "linear"
    with pytest.raises(ValueError, match="resize"):
        c.with_options(resize="cubic")
    with pytest.raises(ValueError, match="output"):
        c.with_options(output="nearest")
    with pytest.raises(AttributeError):
        c.face_size = 128  # type: ignore[misc]


def test_contract_conversions_are_the_reference_ones() -> None:
    import cv2
    import numpy as np

    c = Wav2Lip.contract
    rng = np.random.default_rng(4)
    crop = rng.integers(0, 256, (173, 173, 3), dtype=np.uint8)
    np.testing.assert_array_equal(c.resize_face(crop), cv2.resize(crop, (96, 96)))  # cv2's default: INTER_LINEAR
    np.testing.assert_array_equal(c.with_options(resize="area").resize_face(crop),
                                  cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA))
    pred = rng.random((2, 96, 96, 3), dtype=np.float32)
    pred[0, 0, 0] = (1.0, 0.0, 0.9999999)
    np.testing.assert_array_equal(c.output_to_uint8(pred), (pred * 255.0).astype(np.uint8))  # reference truncation
    np.testing.assert_array_equal(c.with_options(output="round").output_to_uint8(pred),
                                  np.floor(pred.astype(np.float64) * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("name", ["wav2lip", "wav2lip_gan"])
def test_store_entries_agree_with_the_contract(name: str) -> None:
    e = store.get_entry(name)
    c = Wav2Lip.contract
    assert e.family == "wav2lip" and e.sha256 is None and e.meta["sha256_unverified"] is True
    assert e.license.startswith("non-commercial research only")
    assert (e.meta["face_size"], e.meta["mel_step"], e.meta["sample_rate"]) == (c.face_size, c.mel_step, c.sample_rate)
    assert (e.meta["hop_length"], e.meta["n_mels"], e.meta["mask_row"]) == (c.hop_length, c.n_mels, c.mask_row)
    assert e.meta["fps_reference"] == c.fps_reference == 25
    assert e.meta["params"] == WAV2LIP_PARAMETERS and e.meta["state_dict_keys"] == WAV2LIP_STATE_DICT_KEYS
    assert e.meta["format"] in ("state_dict", "torchscript")
    assert store.default_entry("wav2lip").name == "wav2lip_gan"


# --------------------------------------------------------------------------- loading


def test_published_checkpoint_loads_strictly(published: Path, inputs, expected: torch.Tensor) -> None:
    assert checkpoint_format(published) == "torch"
    model = load_wav2lip(published, "cpu")
    assert isinstance(model, Wav2Lip) and not model.training
    with torch.no_grad():
        assert torch.equal(model(*inputs), expected)


def test_legacy_pickle_and_bare_state_dict(seeded: Wav2Lip, tmp_path: Path, inputs, expected: torch.Tensor) -> None:
    legacy = tmp_path / "legacy.pth"  # pre-1.6 torch.save format, as the 2020 release files are
    torch.save({"state_dict": seeded.state_dict(), "global_step": 1}, legacy, _use_new_zipfile_serialization=False)
    bare = tmp_path / "bare.pth"
    torch.save(seeded.state_dict(), bare)
    for path in (legacy, bare):
        assert checkpoint_format(path) == "torch"
        with torch.no_grad():
            assert torch.equal(load_wav2lip(path)(*inputs), expected), path.name


def test_torchscript_loads_and_matches(seeded: Wav2Lip, tmp_path: Path, inputs, expected: torch.Tensor) -> None:
    path = tmp_path / "wav2lip_gan.pt"
    torch.jit.save(torch.jit.trace(seeded, inputs, check_trace=False), path)
    assert checkpoint_format(path) == "torchscript"
    model = load_wav2lip(path, "cpu")
    assert isinstance(model, Wav2Lip) and not model.training
    with torch.no_grad():
        got = model(*inputs)
        scripted = torch.jit.load(path)(*inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, scripted, atol=1e-5, rtol=0)


def test_text_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "not_a_model.pth"
    path.write_text("<html>Sign in to OneDrive</html>\n")
    with pytest.raises(Wav2LipCheckpointError) as err:
        load_wav2lip(path)
    assert str(path) in str(err.value) and "not a Wav2Lip checkpoint" in str(err.value)


def test_missing_and_unexpected_keys_are_named(seeded: Wav2Lip, tmp_path: Path) -> None:
    sd = dict(seeded.state_dict())
    del sd["output_block.1.bias"]
    sd["face_encoder_blocks.7.0.conv_block.0.weight"] = torch.zeros(1)
    path = tmp_path / "wav2lip_192.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(Wav2LipCheckpointError) as err:
        load_wav2lip(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "output_block.1.bias" in msg and "face_encoder_blocks.7.0.conv_block.0.weight" in msg


def test_wrong_shapes_and_non_tensor_dicts_are_refused(seeded: Wav2Lip, tmp_path: Path) -> None:
    sd = dict(seeded.state_dict())
    sd["output_block.1.bias"] = torch.zeros(4)
    shapes = tmp_path / "shapes.pth"
    torch.save(sd, shapes)
    with pytest.raises(Wav2LipCheckpointError, match="output_block.1.bias") as err:
        load_wav2lip(shapes)
    assert str(shapes) in str(err.value)
    junk = tmp_path / "junk.pth"
    torch.save({"epoch": 3, "lr": 0.1}, junk)
    with pytest.raises(Wav2LipCheckpointError, match="found a dict with keys") as err:
        load_wav2lip(junk)
    assert str(junk) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_wav2lip(tmp_path / "nope.pth")
