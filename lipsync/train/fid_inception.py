"""The pytorch-fid "FID Inception" that :mod:`lipsync.train.fid` measures FID with (as
the Wav2Lip paper and most lip-sync work report it): TensorFlow's
``inception-2015-12-05`` graph ported to PyTorch, model-store entry
``fid_inception`` (``pt_inception-2015-12-05-6726825d.pth``, loaded by
:func:`load_fid_inception`).  :class:`FIDInception` is torchvision's
:class:`~torchvision.models.inception.Inception3` layout (1008 classes, no
auxiliary head) with the port's block variants, whose forward passes differ
from torchvision's in the pooling branch only:

* ``Mixed_5b..5d`` (InceptionA), ``Mixed_6b..6e`` (InceptionC) and ``Mixed_7b``
  (InceptionE): the 3x3 stride-1 padding-1 average pool of ``branch_pool``
  ignores the padding (``count_include_pad=False``, TensorFlow's average pool);
* ``Mixed_7c`` (InceptionE): ``branch_pool`` starts with a 3x3 stride-1
  padding-1 *max* pool.

The state-dict keys are torchvision's, so the published file loads strictly
(472 tensors: 94 conv + BatchNorm blocks of 5 tensors, ``fc.weight`` and
``fc.bias``; it has no ``num_batches_tracked``).  The forward returns the 2048-d
pool3 features (``Mixed_7c``, adaptive average pool to 1x1, flattened); ``fc``
is kept for the layout only.

Inputs follow :attr:`FIDInception.contract` (:class:`FIDContract`): uint8 BGR crops
``(N, H, W, 3)`` as the training set stores them -> RGB float in ``[0, 1]`` ->
bilinear resize to 299 x 299 (``align_corners=False``, from the crop's own size)
-> ``2 x - 1`` (:func:`preprocess`, pytorch-fid's ``resize_input`` and
``normalize_input``).

No Prefect import here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.models.inception import BasicConv2d, Inception3, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE

#: Tensors in the published file: 94 BasicConv2d x (conv weight + BN weight, bias, running mean, running var) + fc.
FID_STATE_DICT_KEYS = 94 * 5 + 2


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class FIDContract:
    """What :class:`FIDInception` reads; :func:`preprocess` implements it.

    * callers pass uint8 crops ``(N, H, W, 3)`` in ``input_color_order`` (BGR, as
      the training set and the generator's contract store them);
    * the network reads ``(N, 3, input_size, input_size)`` float in
      ``value_range``, colour order ``color_order``: ``x / 255`` in RGB, resized
      with ``resize`` interpolation (``align_corners`` False, no antialiasing),
      then ``2 x - 1``;
    * it returns ``(N, feature_dim)`` pool3 features.
    """

    input_size: int = 299
    input_color_order: str = "BGR"
    color_order: str = "RGB"
    resize: str = "bilinear"
    align_corners: bool = False
    value_range: tuple[float, float] = (-1.0, 1.0)
    feature_dim: int = 2048
    num_classes: int = 1008


# --------------------------------------------------------------------------- network


class FIDInceptionA(InceptionA):
    """InceptionA whose pool branch averages without counting the padding (TensorFlow's average pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(InceptionC):
    """InceptionC whose pool branch averages without counting the padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _FIDInceptionE(InceptionE):
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self._pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionE_1(_FIDInceptionE):
    """InceptionE of ``Mixed_7b``: the pool branch averages without counting the padding."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionE_2(_FIDInceptionE):
    """InceptionE of ``Mixed_7c``: the pool branch starts with a 3x3 stride-1 max pool (a quirk of the TF graph)."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInception(Inception3):
    """pytorch-fid's FID Inception: torchvision's ``Inception3`` layout, 1008 classes, the port's blocks.

    ``forward`` takes :func:`preprocess`'s output and returns ``(N, 2048)`` pool3
    features; ``fc`` is never applied.  Build with random weights, then load the
    published ones with :func:`load_fid_inception`.
    """

    contract: FIDContract = FIDContract()

    def __init__(self) -> None:
        c = self.contract
        super().__init__(
            num_classes=c.num_classes,
            aux_logits=False,
            transform_input=False,
            inception_blocks=[BasicConv2d, FIDInceptionA, InceptionB, FIDInceptionC, InceptionD, FIDInceptionE_1, InceptionE],
            init_weights=False,
        )
        self.Mixed_7c = FIDInceptionE_2(2048)  # same keys; the max-pool variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
            x = getattr(self, name)(x)
        return torch.flatten(x, 1)


class FIDCheckpointError(ValueError):
    """A file that is not a FID Inception state dict (the message names the file and the keys)."""


def load_fid_inception(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FIDInception:
    """Load ``pt_inception-2015-12-05-6726825d.pth`` (or a file of its layout) strictly, in eval mode, on ``device``.

    Accepts a bare state dict or ``{"state_dict": ...}``; a ``module.`` prefix is
    stripped; BatchNorm ``num_batches_tracked`` counters may be present or absent
    (the published file has none).  Anything else raises :class:`FIDCheckpointError`
    naming the file and the number of missing / unexpected keys.  Read with
    ``weights_only=True``.
    """
    from lipsync.models.checkpoint import load_exact, read_state_dict

    where, obj = read_state_dict(path, "FID Inception", FIDCheckpointError)
    sd = {(str(k)[len("module."):] if str(k).startswith("module.") else str(k)): v for k, v in obj.items()}
    model = load_exact(FIDInception(), sd, where, "FID Inception", "FID Inception (pytorch-fid pt_inception-2015-12-05)",
                       FIDCheckpointError, note=f" ({len(sd)} keys in the file, {FID_STATE_DICT_KEYS} expected)")
    return model.to(device).eval()


# --------------------------------------------------------------------------- input


def preprocess(crops: np.ndarray | torch.Tensor, contract: FIDContract = FIDContract(),
               device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` crops in ``contract.input_color_order`` -> the network's ``(N, 3, S, S)`` input."""
    if not isinstance(crops, torch.Tensor):
        arr = np.asarray(crops)
        crops = torch.from_numpy(arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr))
    x = crops
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"FID: expected (N, H, W, 3) crops, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"FID: expected uint8 crops, got {x.dtype}")
    x = x.to(device).permute(0, 3, 1, 2)
    if contract.input_color_order != contract.color_order:
        x = x.flip(1)  # BGR <-> RGB
    x = x.float() / 255.0
    size = contract.input_size
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode=contract.resize, align_corners=contract.align_corners)
    lo, hi = contract.value_range
    return x * (hi - lo) + lo
