"""SyncNet (Chung & Zisserman, "Out of time", ACCV 2016 workshops): the audio-visual sync expert behind LSE-D / LSE-C.

Written for dub-film from the description of joonson/syncnet_python (MIT); the
module and parameter names follow its published ``syncnet_v2.model`` so that the
file loads with ``strict=True``.  That file is a bare state dict whose keys start
with ``netcnnaud.``, ``netfcaud.``, ``netcnnlip.`` and ``netfclip.``.

* ``netcnnaud`` (``nn.Sequential``, indices as in the reference): the audio CNN on
  a ``(B, 1, 13, 20)`` MFCC window (13 coefficients x 20 steps at 100 Hz = 0.2 s).
  Six 2-D convs (3x3, padding 1, except the last: 5x4, no padding) with 64, 192,
  384, 256, 256, 512 channels, each followed by BatchNorm2d and ReLU; max pools
  (1,1)/(1,1) after conv 1, (3,3)/(1,2) after conv 2, (3,3)/(2,2) after conv 5.
  The plane goes 13x20 -> 11x9 -> 5x4 -> 1x1: 512 features.
* ``netcnnlip``: the lip CNN on ``(B, 3, 5, 224, 224)`` (5 frames, 0.2 s at 25
  fps).  Conv3d (5,7,7)/(1,2,2) to 96 channels (the only temporal kernel: 5
  frames -> 1), pool (1,3,3)/(1,2,2); conv (1,5,5)/(1,2,2) padding (0,1,1) to 256,
  pool (1,3,3)/(1,2,2) padding (0,1,1); three (1,3,3) convs padding (0,1,1) at 256,
  pool (1,3,3)/(1,2,2); conv (1,6,6) to 512.  Every conv is followed by
  BatchNorm3d and ReLU.  224 -> 109 -> 54 -> 26 -> 13 -> 6 -> 1: 512 features.
* ``netfcaud`` / ``netfclip``: ``Linear(512, 512)``, ``BatchNorm1d(512)``, ReLU,
  ``Linear(512, 1024)``.

:meth:`SyncNet.forward_aud` / :meth:`SyncNet.forward_lip` return the raw 1024-d
embeddings (no normalisation), as the reference does; LSE is the Euclidean
distance between them (:mod:`lipsync.qc.lse`).  Every BatchNorm uses PyTorch's
defaults (eps 1e-5).  Size: 13,631,616 parameters (see
:data:`SYNCNET_PARAMETERS`; a test recomputes it from the layer shapes).

The published file predates PyTorch 0.4.1 and may lack the BatchNorm
``num_batches_tracked`` counters (the reference copies tensors one by one and
never needs them); :func:`load_syncnet` accepts their absence and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "SYNCNET_PARAMETERS",
    "SyncNet",
    "SyncNetCheckpointError",
    "SyncNetContract",
    "load_syncnet",
]

#: Trainable parameters of :class:`SyncNet` (a test recomputes it from the layer shapes).
SYNCNET_PARAMETERS = 13_631_616


@dataclass(frozen=True)
class SyncNetContract:
    """What SyncNet expects and how LSE is computed; read it instead of hard-coding numbers.

    * video: 25 fps; a window is ``frames_per_window`` consecutive face crops,
      ``crop_size`` x ``crop_size`` **BGR**, raw 0..255 values as floats (no
      normalisation), laid out ``(B, 3, frames_per_window, crop_size, crop_size)``.
      Crops are cut as syncnet_python's ``crop_video``: box half-size and centre
      median-filtered over the track (``box_median_kernel``), frame padded with
      ``pad_value``, crop scale ``crop_scale``.
    * audio: 16 kHz mono on the 16-bit PCM scale (``audio_scale``); MFCC as
      ``python_speech_features.mfcc`` with its defaults (the ``mfcc_*`` fields),
      ``mfcc_steps_per_frame`` steps per video frame (100 Hz).  Window ``i`` (video
      frames ``i .. i+4``) <-> MFCC steps ``4i .. 4i+19``, as ``(B, 1, 13, 20)``.
    * LSE: distances between a lip window and the audio windows shifted by
      ``-max_offset .. +max_offset`` frames; framewise confidence median-filtered
      with ``median_kernel``.
    """

    fps: int = 25
    sample_rate: int = 16000
    mfcc_steps_per_frame: int = 4
    frames_per_window: int = 5
    mfcc_window_steps: int = 20
    mfcc_dims: int = 13
    crop_size: int = 224
    crop_scale: float = 0.4
    pad_value: int = 110
    box_median_kernel: int = 13
    max_offset: int = 15
    embedding_dim: int = 1024
    median_kernel: int = 9
    # python_speech_features.mfcc defaults
    mfcc_winlen: float = 0.025
    mfcc_winstep: float = 0.010
    mfcc_nfilt: int = 26
    mfcc_nfft: int = 512
    mfcc_preemph: float = 0.97
    mfcc_ceplifter: int = 22
    mfcc_append_energy: bool = True
    audio_scale: float = 32768.0

    @property
    def offsets(self) -> int:
        """Number of shifts tried: ``2 * max_offset + 1`` (31)."""
        return 2 * self.max_offset + 1

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame (640)."""
        return self.sample_rate // self.fps


# --------------------------------------------------------------------------- network


def _conv_stack(dims: int, spec: list[tuple[Any, ...]]) -> nn.Sequential:
    """A Sequential from ``("conv", cin, cout, kernel, stride, padding)`` and ``("pool", kernel, stride, padding)``.

    Each conv is followed by its BatchNorm and ReLU, so the layer indices are the reference's.
    """
    conv, bn, pool = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    layers: list[nn.Module] = []
    for item in spec:
        if item[0] == "conv":
            _, cin, cout, k, s, p = item
            layers += [conv(cin, cout, kernel_size=k, stride=s, padding=p), bn(cout), nn.ReLU(inplace=True)]
        else:
            _, k, s, p = item
            layers.append(pool(kernel_size=k, stride=s, padding=p))
    return nn.Sequential(*layers)


def _fc(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, out))


_AUDIO_CNN: list[tuple[Any, ...]] = [
    ("conv", 1, 64, (3, 3), (1, 1), (1, 1)),
    ("pool", (1, 1), (1, 1), 0),
    ("conv", 64, 192, (3, 3), (1, 1), (1, 1)),
    ("pool", (3, 3), (1, 2), 0),
    ("conv", 192, 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 384, 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 256, 256, (3, 3), (1, 1), (1, 1)),
    ("pool", (3, 3), (2, 2), 0),
    ("conv", 256, 512, (5, 4), (1, 1), (0, 0)),
]

_LIP_CNN: list[tuple[Any, ...]] = [
    ("conv", 3, 96, (5, 7, 7), (1, 2, 2), 0),
    ("pool", (1, 3, 3), (1, 2, 2), 0),
    ("conv", 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2), 0),
    ("conv", 256, 512, (1, 6, 6), (1, 1, 1), 0),
]


class SyncNet(nn.Module):
    """syncnet_python's ``S`` network: audio and lip towers mapping 0.2 s windows to 1024-d embeddings."""

    contract = SyncNetContract()

    def __init__(self) -> None:
        super().__init__()
        dim = self.contract.embedding_dim
        self.netcnnaud = _conv_stack(2, _AUDIO_CNN)
        self.netfcaud = _fc(512, dim)
        self.netcnnlip = _conv_stack(3, _LIP_CNN)
        self.netfclip = _fc(512, dim)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, 1024)`` embeddings (not normalised)."""
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 5, 224, 224)`` BGR 0..255 windows -> ``(B, 1024)`` embeddings (not normalised)."""
        mid = self.netcnnlip(x)
        return self.netfclip(mid.reshape(mid.shape[0], -1))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward_lip(video), forward_aud(audio))``."""
        return self.forward_lip(video), self.forward_aud(audio)


# --------------------------------------------------------------------------- loading


class SyncNetCheckpointError(ValueError):
    """A file that is not a SyncNet checkpoint (the message names the file and the keys)."""


_PREFIXES = ("module.", "__S__.")


def load_syncnet(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SyncNet:
    """Load syncnet_python's ``syncnet_v2.model`` (or a file of the same layout) strictly, in eval mode, on ``device``.

    The file must be a state dict of tensors with exactly the keys and shapes of
    :class:`SyncNet`; BatchNorm ``num_batches_tracked`` counters may be absent
    (the published file predates them).  A ``module.`` (DataParallel) or ``__S__.``
    (a saved ``SyncNetInstance``) prefix is stripped.  Anything else raises
    :class:`SyncNetCheckpointError` (a ``ValueError``) naming the file and the
    missing / unexpected keys.  Read with ``weights_only=True``.
    """
    from .checkpoint import load_exact, read_state_dict

    where, obj = read_state_dict(path, "SyncNet", SyncNetCheckpointError)
    sd: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        k = str(key)
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix) :]
        sd[k] = value
    model = load_exact(SyncNet(), sd, where, "SyncNet", "SyncNet (syncnet_python syncnet_v2)", SyncNetCheckpointError)
    return model.to(device).eval()
