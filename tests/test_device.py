"""lipsync.device.resolve_device: "auto" follows torch's view of the GPU; explicit names pass through, checked."""

from __future__ import annotations

import pytest
import torch

from lipsync.device import resolve_device


@pytest.mark.parametrize("gpu", [True, False])
@pytest.mark.parametrize("value", ["auto", None])
def test_auto_picks_cuda_only_when_torch_sees_a_gpu(monkeypatch, gpu, value):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device(value) == ("cuda" if gpu else "cpu")


def test_default_is_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == "cpu"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:3", "cuda:12", "mps"])
def test_explicit_names_are_returned_as_given(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # not checked against the machine
    assert resolve_device(name) == name


@pytest.mark.parametrize("bad", ["", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda0", " cpu", "cpu ", "tpu", "mps:0"])
def test_anything_else_is_refused_with_the_value_and_the_accepted_forms(bad):
    with pytest.raises(ValueError) as err:
        resolve_device(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    for form in ('"auto"', '"cpu"', '"cuda"', '"cuda:N"', '"mps"'):
        assert form in msg


def test_faces_task_alias_uses_the_resolver(monkeypatch):
    from tasks.faces import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _device("auto") == "cuda" and _device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="'gpu'"):
        _device("gpu")
