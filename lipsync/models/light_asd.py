"""Light-ASD (Liao et al., CVPR 2023): a light audio-visual active speaker detector.

Written for dub-film from the description in Junhua-Liao/Light-ASD (MIT); module
and parameter names follow its published checkpoints (``pretrain_AVA_CVPR.model``,
``finetuning_TalkSet.model``) exactly, so that they load with ``strict=True``:

* ``model.visualEncoder.block{1,2,3}``: each block runs two branches on its input,
  a (1,3,3) spatial conv then a (3,1,1) temporal conv (``s_3``/``t_3``) and a
  (1,5,5) spatial then (5,1,1) temporal conv (``s_5``/``t_5``), every conv
  followed by its BatchNorm (``bn_*``, eps 1e-3) and ReLU; the branches are summed
  and mixed by a 1x1x1 conv (``last``/``bn_last``) and ReLU.  Block 1 has spatial
  stride 2 (112 -> 56); (1,3,3)/(1,2,2) max pools follow blocks 1 and 2
  (56 -> 28 -> 14); a global spatial max pool ends the encoder: 128 features per
  video frame.  Convs have no bias.
* ``model.audioEncoder.block{1,2,3}``: the same two-branch block in 2-D on the
  ``(13 MFCC x time)`` plane (``m_k`` along the MFCC axis, ``t_k`` along time);
  (1,3)/(1,2) max pools along time after blocks 1 and 2 (100 Hz -> 25 Hz), then a
  mean over the MFCC axis: 128 features per video frame.
* ``model.GRU``: audio and visual features are *added*, then a forward GRU
  (``gru_forward``), GELU, a GRU run over the time-reversed sequence
  (``gru_backward``), reversed back, GELU.
* ``lossAV.FC``: ``Linear(128, 2)``; the speaking score of a frame is its class-1
  logit (``FC(x)[:, 1]``, not a softmax), positive = speaking, as the repo's
  ``Columbia_test.py`` reports it.

The checkpoints also hold ``lossV.FC`` (a visual-only head used as an auxiliary
loss in training, never for scoring).  :func:`load_light_asd` loads ``model.*``
and ``lossAV.*`` strictly and lists the ``lossV.*`` keys it left out in
:attr:`LightASD.ignored_keys`; any other key is an error.

Size: 1,021,378 parameters (the file holds 1,026,146 numbers: those, the BatchNorm
statistics and the unused ``lossV`` head).

The input contract is :attr:`LightASD.contract` (a :class:`LightASDContract`);
:func:`mfcc` computes the audio features exactly as ``python_speech_features.mfcc``
does with the repo's arguments (:mod:`lipsync.audio.mfcc`), without needing that package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lipsync.audio.mfcc import MfccParams, mfcc_params
from lipsync.audio.mfcc import mfcc as audio_mfcc

__all__ = [
    "LIGHT_ASD_PARAMETERS",
    "LightASD",
    "LightASDCheckpointError",
    "LightASDContract",
    "load_light_asd",
    "mfcc",
]

#: Parameters of the scoring network (``model.*`` + ``lossAV.*``); a test checks it.
LIGHT_ASD_PARAMETERS = 1_021_378


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class LightASDContract:
    """What the network expects; read it instead of hard-coding numbers.

    * video: ``(B, T, face_size, face_size)`` grayscale face crops, float values
      0..255 (the network normalises them with ``pixel_mean``/``pixel_std`` on the
      0..1 scale), at ``fps`` frames per second.
    * audio: ``(B, audio_steps_per_frame * T, mfcc_dims)`` MFCC at
      ``audio_rate_hz``: video frame ``i`` <-> MFCC steps ``[4i, 4i + 4)``, step
      ``k`` being the ``winlen`` window starting at sample ``k * winstep *
      sample_rate`` of the 16 kHz audio that starts with frame 0.  MFCC as
      ``python_speech_features.mfcc(signal, 16000, numcep=13, winlen=0.025,
      winstep=0.010)`` (26 mel filters, 512-point FFT, pre-emphasis 0.97, lifter
      22, log frame energy as coefficient 0, rectangular window) on the signal at
      16-bit PCM scale (``audio_scale``), as the repo reads its WAVs.
    * output: ``(B, T)`` scores, the class-1 logit; ``> 0`` means speaking.

    The crop rule (``crop_scale``, ``crop_pad_value``, ``crop_resize``, centre
    ``face_size`` square, ``box_median_kernel``) and the evaluation windows
    (``durations``) are the repo's ``Columbia_test.py``; see
    :mod:`lipsync.speakers.asd`.
    """

    face_size: int = 112
    face_color: str = "gray"
    fps: int = 25
    sample_rate: int = 16000
    mfcc_dims: int = 13
    audio_rate_hz: int = 100
    audio_steps_per_frame: int = 4
    mfcc_winlen: float = 0.025
    mfcc_winstep: float = 0.010
    mfcc_nfilt: int = 26
    mfcc_nfft: int = 512
    mfcc_preemph: float = 0.97
    mfcc_ceplifter: int = 22
    mfcc_append_energy: bool = True
    audio_scale: float = 32768.0
    pixel_mean: float = 0.4161
    pixel_std: float = 0.1688
    crop_scale: float = 0.40
    crop_pad_value: int = 110
    crop_resize: int = 224
    box_median_kernel: int = 13
    durations: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

    @property
    def mfcc_params(self) -> MfccParams:
        """The ``mfcc_*`` numbers as the :class:`~lipsync.audio.mfcc.MfccParams` of :func:`mfcc`."""
        return mfcc_params(self)

    @property
    def samples_per_step(self) -> int:
        """Audio samples between MFCC steps (160)."""
        return self.mfcc_params.samples_per_step

    @property
    def window_samples(self) -> int:
        """Audio samples in one MFCC window (400)."""
        return self.mfcc_params.window_samples

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame at :attr:`fps` (640)."""
        return self.samples_per_step * self.audio_steps_per_frame


# --------------------------------------------------------------------------- MFCC


def mfcc(signal: np.ndarray, contract: LightASDContract | None = None, *, steps: int | None = None) -> np.ndarray:
    """MFCC ``(steps, 13)`` of a 16 kHz signal, identical to ``python_speech_features.mfcc`` with the repo's arguments.

    :func:`lipsync.audio.mfcc.mfcc` with the contract's ``mfcc_*`` numbers.
    ``signal`` is float audio in -1..1 (it is put on the 16-bit PCM scale,
    rounded and clipped, as the repo's ``wavfile.read`` of an ``s16le`` WAV
    gives it) or integer PCM (used as is).  Step ``k`` is the window starting
    at sample ``160 k``; the signal is zero-padded at the end as needed.
    ``steps`` fixes the number of steps (default: python_speech_features' count,
    ``1 + ceil((len - 400) / 160)``).
    """
    return audio_mfcc(signal, (contract or LightASDContract()).mfcc_params, steps=steps)


# --------------------------------------------------------------------------- blocks


def _bn3(ch: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(ch, momentum=0.01, eps=0.001)


def _bn2(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, momentum=0.01, eps=0.001)


class _VisualBlock(nn.Module):
    """Two (2+1)-D branches (3x3 then 3-frame; 5x5 then 5-frame), summed, mixed by 1x1x1."""

    def __init__(self, cin: int, cout: int, downsample: bool = False) -> None:
        super().__init__()
        st = (1, 2, 2) if downsample else (1, 1, 1)
        self.s_3 = nn.Conv3d(cin, cout, (1, 3, 3), stride=st, padding=(0, 1, 1), bias=False)
        self.bn_s_3 = _bn3(cout)
        self.t_3 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = _bn3(cout)
        self.s_5 = nn.Conv3d(cin, cout, (1, 5, 5), stride=st, padding=(0, 2, 2), bias=False)
        self.bn_s_5 = _bn3(cout)
        self.t_5 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = _bn3(cout)
        self.last = nn.Conv3d(cout, cout, 1, bias=False)
        self.bn_last = _bn3(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        a = r(self.bn_t_3(self.t_3(r(self.bn_s_3(self.s_3(x))))))
        b = r(self.bn_t_5(self.t_5(r(self.bn_s_5(self.s_5(x))))))
        return r(self.bn_last(self.last(a + b)))


class _AudioBlock(nn.Module):
    """Two 2-D branches on (MFCC, time): (3,1) then (1,3); (5,1) then (1,5); summed, mixed by 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.m_3 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = _bn2(cout)
        self.t_3 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = _bn2(cout)
        self.m_5 = nn.Conv2d(cin, cout, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = _bn2(cout)
        self.t_5 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = _bn2(cout)
        self.last = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_last = _bn2(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        a = r(self.bn_t_3(self.t_3(r(self.bn_m_3(self.m_3(x))))))
        b = r(self.bn_t_5(self.t_5(r(self.bn_m_5(self.m_5(x))))))
        return r(self.bn_last(self.last(a + b)))


class _VisualEncoder(nn.Module):
    """``(B, 1, T, 112, 112)`` normalised faces -> ``(B, T, 128)``."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = _VisualBlock(1, 32, downsample=True)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block2 = _VisualBlock(32, 64)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block3 = _VisualBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.amax(dim=(3, 4)).transpose(1, 2)  # global spatial max: (B, C, T) -> (B, T, C)


class _AudioEncoder(nn.Module):
    """``(B, 1, 13, 4T)`` MFCC -> ``(B, T, 128)``."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = _AudioBlock(1, 32)
        self.pool1 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block2 = _AudioBlock(32, 64)
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block3 = _AudioBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.mean(dim=2).transpose(1, 2)  # mean over the MFCC axis: (B, C, T) -> (B, T, C)


def _fold(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` as one bias-free conv followed by a bias, in eval mode."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        b = bn.bias - bn.running_mean * scale
    return w.detach().clone(), b.detach().clone()


class _FusedVisual:
    """Inference-only twin of :class:`_VisualEncoder`: BatchNorm folded into the convs,
    spatial (1,k,k) convs run as 2-D convs on ``(B*T, C, H, W)`` and temporal (k,1,1)
    convs as 2-D convs on ``(B, C, T, H*W)``.  Same function, fewer passes over memory."""

    def __init__(self, enc: _VisualEncoder) -> None:
        self.blocks = []
        for blk in (enc.block1, enc.block2, enc.block3):
            p: dict[str, Any] = {"stride": blk.s_3.stride[1]}
            for name in ("s_3", "t_3", "s_5", "t_5", "last"):
                w, b = _fold(getattr(blk, name), getattr(blk, "bn_" + name))
                if name.startswith("s_"):
                    w = w[:, :, 0]  # (O, I, k, k)
                elif name.startswith("t_"):
                    w = w[:, :, :, 0, 0].unsqueeze(-1)  # (O, I, k, 1)
                else:
                    w = w[:, :, 0]  # (O, I, 1, 1)
                p[name] = (w.contiguous(), b.contiguous())
            self.blocks.append(p)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 112, 112)`` normalised faces -> ``(B, T, 128)``."""
        F = nn.functional
        B, T, H, W = x.shape
        x = x.reshape(B * T, 1, H, W)
        for i, p in enumerate(self.blocks):
            branches = []
            for pad, s_name, t_name in ((1, "s_3", "t_3"), (2, "s_5", "t_5")):
                y = F.relu(F.conv2d(x, *p[s_name], stride=p["stride"], padding=pad))
                _, C, h, w = y.shape
                y = y.reshape(B, T, C, h * w).transpose(1, 2)  # (B, C, T, h*w)
                branches.append(F.relu(F.conv2d(y, *p[t_name], padding=(pad, 0))))
            y = F.relu(F.conv2d(branches[0] + branches[1], *p["last"]))
            x = y.transpose(1, 2).reshape(B * T, C, h, w)
            if i < 2:
                x = F.max_pool2d(x, 3, 2, 1)
        return x.amax(dim=(2, 3)).reshape(B, T, -1)


class _BiGRU(nn.Module):
    """Forward GRU, GELU, GRU over the reversed sequence (reversed back), GELU."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, num_layers=1, bias=True, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, num_layers=1, bias=True, batch_first=True)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.gru_forward(x)[0])
        x = torch.flip(self.gru_backward(torch.flip(x, dims=[1]))[0], dims=[1])
        return self.gelu(x)


class _ASDModel(nn.Module):
    """The ``model.*`` part of the checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.visualEncoder = _VisualEncoder()
        self.audioEncoder = _AudioEncoder()
        self.GRU = _BiGRU(128)


class _Head(nn.Module):
    """The ``lossAV.*`` part of the checkpoint: ``FC = Linear(128, 2)``."""

    def __init__(self) -> None:
        super().__init__()
        self.FC = nn.Linear(128, 2)


# --------------------------------------------------------------------------- network


class LightASD(nn.Module):
    """Light-ASD scoring network: ``forward(mfcc (B, 4T, 13), faces (B, T, 112, 112)) -> (B, T)`` scores.

    The stages are exposed separately so callers can run the (costly) front ends
    once and the (cheap) back end on several windows: :meth:`visual_frontend`,
    :meth:`audio_frontend`, :meth:`backend`.  Argument order (audio first) is the
    reference's.
    """

    contract: LightASDContract = LightASDContract()

    def __init__(self) -> None:
        super().__init__()
        self.model = _ASDModel()
        self.lossAV = _Head()
        #: Checkpoint keys present in the file but not used for scoring (``lossV.*``).
        self.ignored_keys: tuple[str, ...] = ()

    def visual_frontend(self, faces: torch.Tensor, *, fused: bool | None = None) -> torch.Tensor:
        """``(B, T, 112, 112)`` gray faces in 0..255 -> ``(B, T, 128)``.

        In eval mode (``fused=None``) this runs :class:`_FusedVisual`, the same
        computation with BatchNorm folded into the convolutions and the (2+1)-D
        convolutions as 2-D ones (about 1.8x faster on CPU; equal to the module
        path within float32 rounding, a test checks it).  ``fused=False`` runs the
        checkpoint's modules as they are.
        """
        c = self.contract
        x = (faces / 255.0 - c.pixel_mean) / c.pixel_std
        if fused is None:
            fused = not self.training
        if fused:
            return self._fused_visual()(x)
        return self.model.visualEncoder(x.unsqueeze(1))

    def _fused_visual(self) -> "_FusedVisual":
        w = self.model.visualEncoder.block1.s_3.weight
        key = (w.device, w.dtype, w.data_ptr(), w._version)
        cached = self.__dict__.get("_fused_cache")
        if cached is None or cached[0] != key:
            cached = (key, _FusedVisual(self.model.visualEncoder))
            self.__dict__["_fused_cache"] = cached
        return cached[1]

    def audio_frontend(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(B, 4T, 13)`` MFCC -> ``(B, T, 128)``."""
        return self.model.audioEncoder(mfcc.unsqueeze(1).transpose(2, 3))

    def backend(self, audio_embed: torch.Tensor, visual_embed: torch.Tensor) -> torch.Tensor:
        """Fused ``(B, T, 128)`` embeddings -> ``(B, T)`` scores (class-1 logits)."""
        x = self.model.GRU(audio_embed + visual_embed)
        return self.lossAV.FC(x)[..., 1]

    def forward(self, mfcc: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self.backend(self.audio_frontend(mfcc), self.visual_frontend(faces))


# --------------------------------------------------------------------------- loading


class LightASDCheckpointError(ValueError):
    """A file that is not a Light-ASD checkpoint (names the file and what was found)."""


#: Key prefixes of the published files that scoring does not use (the visual-only training head).
_UNUSED_PREFIXES = ("lossV.",)


def load_light_asd(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LightASD:
    """Load a Light-ASD checkpoint into a :class:`LightASD`, strictly, in eval mode, on ``device``.

    The published files are bare state dicts with ``model.*``, ``lossAV.*`` and
    ``lossV.*`` keys; a ``module.`` prefix (DataParallel) is stripped if present.
    ``model.*`` and ``lossAV.*`` must match the architecture exactly; ``lossV.*``
    is left out and recorded in :attr:`LightASD.ignored_keys`.  Anything else
    raises :class:`LightASDCheckpointError` naming the file and the keys.
    Read with ``weights_only=True``.
    """
    from .checkpoint import read_state_dict

    where, obj = read_state_dict(path, "Light-ASD", LightASDCheckpointError)
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in ((str(k), v) for k, v in obj.items())}
    ignored = tuple(sorted(k for k in sd if k.startswith(_UNUSED_PREFIXES)))
    used = {k: v for k, v in sd.items() if not k.startswith(_UNUSED_PREFIXES)}
    model = LightASD()
    want, have = set(model.state_dict()), set(used)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise LightASDCheckpointError(
            f"{where}: not a Light-ASD checkpoint: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]} (TalkNet or another ASD model?)"
        )
    try:
        model.load_state_dict(used, strict=True)
    except RuntimeError as exc:
        raise LightASDCheckpointError(f"{where}: Light-ASD keys match but tensors do not: {str(exc)[:400]}") from exc
    model.ignored_keys = ignored
    return model.to(device).eval()
