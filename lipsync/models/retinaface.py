"""RetinaFace (Deng et al., CVPR 2020): backbone, FPN, SSH context modules, three heads.

Written for dub-film; module and parameter names follow the published
checkpoints exactly so that they load with ``strict=True``:

* ``mobilenet0.25`` -- biubug6's MobileNetV1 x0.25 body (``body.stage1..3``), as in
  Face-Detector-1MB-with-landmark's ``mobilenet0.25_Final.pth``;
* ``resnet50`` -- a torchvision-compatible ResNet-50 body (``body.conv1``,
  ``body.bn1``, ``body.layer1..4``; no ``fc``), as in ternaus/retinaface's
  ``retinaface_resnet50_2020-07-20.pth``.

Both share ``fpn.output1..3 / merge1..2``, ``ssh1..3.{conv3X3, conv5X5_1,
conv5X5_2, conv7X7_2, conv7x7_3}`` and ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1``.
torchvision is not needed.

The network maps a normalised ``(B, 3, H, W)`` float batch to per-prior raw
outputs (:class:`RetinaFaceOutput`); priors, decoding, thresholds and NMS live in
:mod:`lipsync.faces.retinaface`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BACKBONES",
    "RetinaFace",
    "RetinaFaceConfig",
    "RetinaFaceOutput",
    "clean_state_dict",
    "load_retinaface",
]

#: Backbones this module builds, with the stage channels they hand to the FPN.
BACKBONES: dict[str, tuple[int, int, int]] = {
    "mobilenet0.25": (64, 128, 256),
    "resnet50": (512, 1024, 2048),
}


@dataclass(frozen=True)
class RetinaFaceConfig:
    """Architecture of one RetinaFace checkpoint.

    ``in_channel`` x (2, 4, 8) are the channels of the three backbone stages fed to
    the FPN; ``out_channel`` is the FPN/SSH width; ``leaky`` the negative slope of
    the MobileNet/FPN/SSH activations (0 = ReLU; ResNet-50 always uses ReLU).
    """

    backbone: str
    in_channel: int
    out_channel: int
    num_anchors: int = 2
    leaky: float = 0.0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"RetinaFace backbone {self.backbone!r} is not one of {sorted(BACKBONES)}")
        stages = tuple(self.in_channel * m for m in (2, 4, 8))
        if stages != BACKBONES[self.backbone]:
            raise ValueError(
                f"RetinaFace {self.backbone}: in_channel={self.in_channel} gives stage channels {stages}, "
                f"the backbone has {BACKBONES[self.backbone]}; fix the entry's meta"
            )
        if self.out_channel % 4:
            raise ValueError(f"RetinaFace out_channel={self.out_channel} must be a multiple of 4")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "RetinaFaceConfig":
        """Read the architecture from a model-store entry's ``meta``."""
        return cls(
            backbone=str(meta["backbone"]),
            in_channel=int(meta["in_channel"]),
            out_channel=int(meta["out_channel"]),
            num_anchors=int(meta.get("num_anchors", 2)),
            leaky=float(meta.get("leaky", 0.0)),
        )


class RetinaFaceOutput(NamedTuple):
    """Raw per-prior outputs, priors ordered level by level, row-major, anchor-minor.

    ``loc`` ``(B, P, 4)`` box offsets, ``conf`` ``(B, P, 2)`` logits (background,
    face), ``landms`` ``(B, P, 10)`` landmark offsets.
    """

    loc: torch.Tensor
    conf: torch.Tensor
    landms: torch.Tensor


def _act(leaky: float) -> nn.Module:
    return nn.LeakyReLU(negative_slope=leaky, inplace=True) if leaky > 0 else nn.ReLU(inplace=True)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, *, act: float | None, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias) + BatchNorm (+ activation with slope ``act`` unless None)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(_act(act))
    return layers


# --------------------------------------------------------------------------- backbones


class _MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 (biubug6 layout): three stages at strides 8, 16, 32."""

    def __init__(self, leaky: float) -> None:
        super().__init__()

        def dw(cin: int, cout: int, stride: int) -> list[nn.Module]:
            # depthwise 3x3 then pointwise 1x1: indices 0,1,(2) and 3,4,(5)
            return _conv_bn(cin, cin, 3, stride, act=leaky, groups=cin) + _conv_bn(cin, cout, 1, 1, act=leaky)

        self.stage1 = nn.Sequential(
            nn.Sequential(*_conv_bn(3, 8, 3, 2, act=leaky)),
            nn.Sequential(*dw(8, 16, 1)),
            nn.Sequential(*dw(16, 32, 2)),
            nn.Sequential(*dw(32, 32, 1)),
            nn.Sequential(*dw(32, 64, 2)),
            nn.Sequential(*dw(64, 64, 1)),
        )
        self.stage2 = nn.Sequential(nn.Sequential(*dw(64, 128, 2)), *[nn.Sequential(*dw(128, 128, 1)) for _ in range(5)])
        self.stage3 = nn.Sequential(nn.Sequential(*dw(128, 256, 2)), nn.Sequential(*dw(256, 256, 1)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return [c1, c2, c3]


class _Bottleneck(nn.Module):
    """ResNet-50 bottleneck (torchvision v1.5 layout: the stride sits on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class _ResNet50Body(nn.Module):
    """ResNet-50 up to ``layer4`` (no pooling/fc); returns layer2..4 (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            layer = [_Bottleneck(inplanes, planes, stride)]
            inplanes = planes * _Bottleneck.expansion
            layer += [_Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c2, c3, c4]


# --------------------------------------------------------------------------- neck and heads


class _FPN(nn.Module):
    """Top-down feature pyramid over the three backbone stages (nearest upsampling)."""

    def __init__(self, in_channels: tuple[int, int, int], out_channel: int, leaky: float) -> None:
        super().__init__()
        self.output1 = nn.Sequential(*_conv_bn(in_channels[0], out_channel, 1, act=leaky))
        self.output2 = nn.Sequential(*_conv_bn(in_channels[1], out_channel, 1, act=leaky))
        self.output3 = nn.Sequential(*_conv_bn(in_channels[2], out_channel, 1, act=leaky))
        self.merge1 = nn.Sequential(*_conv_bn(out_channel, out_channel, 3, act=leaky))
        self.merge2 = nn.Sequential(*_conv_bn(out_channel, out_channel, 3, act=leaky))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, cin: int, cout: int, leaky: float) -> None:
        super().__init__()
        q = cout // 4
        self.conv3X3 = nn.Sequential(*_conv_bn(cin, cout // 2, 3, act=None))
        self.conv5X5_1 = nn.Sequential(*_conv_bn(cin, q, 3, act=leaky))
        self.conv5X5_2 = nn.Sequential(*_conv_bn(q, q, 3, act=None))
        self.conv7X7_2 = nn.Sequential(*_conv_bn(q, q, 3, act=leaky))
        self.conv7x7_3 = nn.Sequential(*_conv_bn(q, q, 3, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(self.conv7X7_2(b5))], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting ``width`` values per anchor, flattened to ``(B, H*W*A, width)``."""

    def __init__(self, cin: int, num_anchors: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.conv1x1 = nn.Conv2d(cin, num_anchors * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.width)


class RetinaFace(nn.Module):
    """RetinaFace with a MobileNetV1-0.25 or ResNet-50 body (see :class:`RetinaFaceConfig`)."""

    def __init__(self, config: RetinaFaceConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.body: nn.Module = _MobileNetV1Body(c.leaky) if c.backbone == "mobilenet0.25" else _ResNet50Body()
        stages = (c.in_channel * 2, c.in_channel * 4, c.in_channel * 8)
        self.fpn = _FPN(stages, c.out_channel, c.leaky)
        self.ssh1 = _SSH(c.out_channel, c.out_channel, c.leaky)
        self.ssh2 = _SSH(c.out_channel, c.out_channel, c.leaky)
        self.ssh3 = _SSH(c.out_channel, c.out_channel, c.leaky)
        self.ClassHead = nn.ModuleList(_Head(c.out_channel, c.num_anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(c.out_channel, c.num_anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(c.out_channel, c.num_anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> RetinaFaceOutput:
        """``x``: normalised ``(B, 3, H, W)``; any H, W (levels are ceil(H / 8, 16, 32))."""
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        return RetinaFaceOutput(
            loc=torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1),
            conf=torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1),
            landms=torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1),
        )


# --------------------------------------------------------------------------- loading


def clean_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint as a plain state dict.

    Accepts a bare state dict or ``{"state_dict": ...}``; strips a ``module.``
    prefix (DataParallel) when every key carries it.
    """
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{where}: not a state dict (got {type(obj).__name__})")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_retinaface(
    path: str | os.PathLike[str],
    config: RetinaFaceConfig | Mapping[str, Any],
    map_location: str | torch.device = "cpu",
) -> RetinaFace:
    """Build a :class:`RetinaFace` for ``config`` (or an entry's meta) and load ``path`` strictly, in eval mode.

    Raises :class:`ValueError` naming the file, the first missing/unexpected keys
    and the likely fix when the checkpoint does not match the architecture.
    """
    cfg = config if isinstance(config, RetinaFaceConfig) else RetinaFaceConfig.from_meta(config)
    where = os.fspath(path)
    sd = clean_state_dict(torch.load(where, map_location=map_location, weights_only=True), where)
    model = RetinaFace(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        want, have = set(model.state_dict()), set(sd)
        missing, unexpected = sorted(want - have)[:5], sorted(have - want)[:5]
        raise ValueError(
            f"{where}: not a RetinaFace-{cfg.backbone} checkpoint for this architecture "
            f"(missing {missing}, unexpected {unexpected}; {exc.__class__.__name__}: {str(exc)[:300]}); "
            f"pick the weights entry that matches the file (see `dub models list`)"
        ) from exc
    return model.eval()
