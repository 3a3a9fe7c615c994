"""The visual quality discriminator of Wav2Lip + GAN (Prajwal et al., ACM MM 2020).

Written for dub-film from the layer list of Rudrabha/Wav2Lip ``Wav2Lip_disc_qual``;
module and parameter names follow the published ``visual_quality_disc.pth`` so it
loads with ``strict=True``:

* every block is ``conv_block.0`` (``Conv2d`` with bias, **no** BatchNorm) then
  LeakyReLU(0.01) (the reference's ``nonorm_Conv2d``);
* ``face_encoder_blocks.0..6`` on the **lower half** of one BGR face crop in
  ``[0, 1]``, ``(N, 3, 48, 96)``: 48x96 -> 48x48 -> 24 -> 12 -> 6 -> 3 -> 1,
  512 channels;
* ``binary_pred.0``: a 1x1 ``Conv2d`` to one channel, then a sigmoid: the
  probability that the crop is a real frame (not generated).

Size: 14,113,793 parameters, 28 state-dict entries (weights and biases only;
no buffers).

:meth:`Wav2LipDiscQual.forward` takes full ``(N, 3, 96, 96)`` crops (it cuts the
lower half itself, as the reference does) or ``(B, 3, T, 96, 96)`` sequences
(flattened frame-major to ``T * B`` crops, the reference's ``to_2d``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DISC_PARAMETERS", "DISC_STATE_DICT_KEYS", "Wav2LipDiscQual", "load_disc", "disc_state_dict"]

DISC_PARAMETERS = 14_113_793
DISC_STATE_DICT_KEYS = 28


class _NoNormConv(nn.Module):
    """``conv_block = [Conv2d]``, then LeakyReLU(0.01)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class Wav2LipDiscQual(nn.Module):
    """``forward(face (N,3,96,96) or (B,3,T,96,96)) -> (N or T*B, 1)`` probability of "real"."""

    def __init__(self) -> None:
        super().__init__()
        c = _NoNormConv
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(c(3, 32, 7, 1, 3)),  # 48x96
                nn.Sequential(c(32, 64, 5, (1, 2), 2), c(64, 64, 5, 1, 2)),  # 48x48
                nn.Sequential(c(64, 128, 5, 2, 2), c(128, 128, 5, 1, 2)),  # 24
                nn.Sequential(c(128, 256, 5, 2, 2), c(256, 256, 5, 1, 2)),  # 12
                nn.Sequential(c(256, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),  # 6
                nn.Sequential(c(512, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),  # 3
                nn.Sequential(c(512, 512, 3, 1, 0), c(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

    @staticmethod
    def to_frames(faces: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(T * B, C, H, W)``, frame-major (all of frame 0 first); 4-D unchanged."""
        if faces.dim() == 5:
            return torch.cat([faces[:, :, t] for t in range(faces.size(2))], dim=0)
        if faces.dim() != 4:
            raise ValueError(f"expected (N,3,H,W) or (B,3,T,H,W) faces, got shape {tuple(faces.shape)}")
        return faces

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = self.to_frames(faces)
        x = x[:, :, x.size(2) // 2 :]
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).view(len(x), -1)

    def perceptual_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: BCE of the prediction on generated crops against "real" (1).

        Computed in float32 outside autocast (BCE on probabilities is not autocast-safe).
        """
        pred = self(fake)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            p = pred.float()
            return F.binary_cross_entropy(p, torch.ones_like(p))


def disc_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The discriminator tensors from ``{"state_dict": ...}`` or a bare state dict, ``module.`` stripped."""
    sd = obj["state_dict"] if isinstance(obj, Mapping) and "state_dict" in obj else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{where}: not a visual quality discriminator checkpoint (found a {type(sd).__name__})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in ((str(k), v) for k, v in sd.items())}


def load_disc(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Wav2LipDiscQual:
    """Load ``visual_quality_disc.pth`` (or one of our ``disc_*.pth``) strictly, on ``device``, in train mode."""
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{where}: no such discriminator checkpoint file")
    sd = disc_state_dict(torch.load(where, map_location="cpu", weights_only=True), where)
    model = Wav2LipDiscQual()
    model.load_state_dict(sd, strict=True)
    return model.to(device)
