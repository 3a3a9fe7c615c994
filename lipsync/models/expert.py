"""The expert lip-sync discriminator of Wav2Lip (Prajwal et al., ACM MM 2020): ``SyncNet_color``.

Written for dub-film from the layer list of Rudrabha/Wav2Lip ``models/syncnet.py``
(``SyncNet_color``) and ``models/conv.py``; module and parameter names follow the
published ``lipsync_expert.pth`` so that it loads with ``strict=True``:

* every block is ``conv_block.0`` (``Conv2d`` with bias) then ``conv_block.1``
  (``BatchNorm2d``), plus the block's input when it is residual, then ReLU (the
  same block as the generator's, :mod:`lipsync.models.wav2lip`);
* ``face_encoder.0..16`` on the lower halves of 5 consecutive BGR face crops
  stacked on channels, ``(B, 15, 48, 96)``:
  48x96 -> 46x47 -> 23x24 -> 12x12 -> 6x6 -> 3x3 -> 1x1, 512 channels;
* ``audio_encoder.0..13`` on one ``(B, 1, 80, 16)`` mel window (the first frame's):
  80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1, 512 channels;
* both embeddings flattened to 512 and L2-normalised.  Their cosine similarity
  is the sync probability: the last block of each encoder ends in ReLU, so both
  embeddings are non-negative and the cosine lies in ``[0, 1]``; training is
  BCE on it (:mod:`lipsync.train.expert`).

No dropout (the original layout; some forks add ``nn.Dropout`` layers, which
shift the Sequential indices and break key compatibility).  Size:
16,435,072 parameters and 217 state-dict entries (parameters plus BatchNorm
``running_mean`` / ``running_var`` / ``num_batches_tracked``); tests check both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from lipsync.audio.mel import DEFAULT_MEL, MelContract

__all__ = [
    "EXPERT_PARAMETERS",
    "EXPERT_STATE_DICT_KEYS",
    "ExpertCheckpointError",
    "ExpertContract",
    "SyncNetColor",
    "load_expert",
    "sync_probability",
]

#: Size of the published expert (tests check both).
EXPERT_PARAMETERS = 16_435_072
EXPERT_STATE_DICT_KEYS = 217


@dataclass(frozen=True)
class ExpertContract:
    """What the expert reads; callers take numbers from here instead of repeating them.

    * face: ``(B, frames * 3, face_size - lower_row, face_size)`` float in
      ``value_range``, colour order ``color_order``: ``frames`` consecutive crops
      (at ``fps``), each cut to rows ``lower_row:`` (the lower half), concatenated
      on channels in time order (frame 0's B, G, R first).
    * audio: ``(B, 1, n_mels, mel_step)``: the window of
      :func:`lipsync.audio.mel.melspectrogram` starting at
      :func:`lipsync.audio.mel.mel_window_start` of the **first** of the frames
      (16 columns = 200 ms = 5 frames at 25 fps).
    * output: two ``(B, embedding_dim)`` L2-normalised embeddings (audio, face).
    """

    face_size: int = 96
    lower_row: int = 48
    frames: int = 5
    color_order: str = "BGR"
    value_range: tuple[float, float] = (0.0, 1.0)
    fps: int = 25
    embedding_dim: int = 512
    mel: MelContract = field(default=DEFAULT_MEL)

    @property
    def mel_step(self) -> int:
        return self.mel.mel_step

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def face_channels(self) -> int:
        return 3 * self.frames

    @property
    def face_shape(self) -> tuple[int, int, int]:
        """``(15, 48, 96)``."""
        return (self.face_channels, self.face_size - self.lower_row, self.face_size)

    @property
    def audio_shape(self) -> tuple[int, int, int]:
        """``(1, 80, 16)``."""
        return (1, self.n_mels, self.mel_step)


class _Conv(nn.Module):
    """``conv_block = [Conv2d, BatchNorm2d]`` (+ input when residual), then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


def _stage(cin: int, cout: int, stride: int | tuple[int, int], res: int, kernel: int = 3, padding: int = 1) -> list[nn.Module]:
    """One (strided) block to ``cout`` channels, then ``res`` residual 3x3 blocks."""
    return [_Conv(cin, cout, kernel, stride, padding)] + [_Conv(cout, cout, 3, 1, 1, residual=True) for _ in range(res)]


class SyncNetColor(nn.Module):
    """``forward(audio (B,1,80,16), face (B,15,48,96)) -> (audio_emb (B,512), face_emb (B,512))``, both unit length.

    Argument order (audio first) is the reference's.  ``width`` scales every
    channel count (embeddings of ``round(512 * width)``): 1.0 is the published
    network; smaller widths, same layout and key names, exist for fast
    experiments and tests only and are not compatible with ``lipsync_expert.pth``.
    """

    contract: ExpertContract = ExpertContract()

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width}")
        self.width = float(width)

        def c(n: int) -> int:
            return max(1, int(round(n * width)))

        self.face_encoder = nn.Sequential(
            _Conv(15, c(32), 7, 1, 3),  # 48x96
            *_stage(c(32), c(64), (1, 2), 2, kernel=5),  # 46x47
            *_stage(c(64), c(128), 2, 3),  # 23x24
            *_stage(c(128), c(256), 2, 2),  # 12x12
            *_stage(c(256), c(512), 2, 2),  # 6x6
            _Conv(c(512), c(512), 3, 2, 1),  # 3x3
            _Conv(c(512), c(512), 3, 1, 0),  # 1x1
            _Conv(c(512), c(512), 1, 1, 0),
        )
        self.audio_encoder = nn.Sequential(
            *_stage(1, c(32), 1, 2),  # 80x16
            *_stage(c(32), c(64), (3, 1), 2),  # 27x16
            *_stage(c(64), c(128), 3, 2),  # 9x6
            *_stage(c(128), c(256), (3, 2), 2),  # 3x3
            _Conv(c(256), c(512), 3, 1, 0),  # 1x1
            _Conv(c(512), c(512), 1, 1, 0),
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.audio_encoder(audio).flatten(1)
        v = self.face_encoder(face).flatten(1)
        return F.normalize(a, p=2, dim=1), F.normalize(v, p=2, dim=1)


def sync_probability(audio_emb: torch.Tensor, face_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the two embeddings, ``(B,)`` in ``[0, 1]`` (the expert's "in sync" probability)."""
    return F.cosine_similarity(audio_emb, face_emb)


# --------------------------------------------------------------------------- loading


class ExpertCheckpointError(ValueError):
    """A file that is not a SyncNet_color expert checkpoint (names the file and what was found)."""


def expert_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The expert's tensors from ``{"state_dict": ...}`` or a bare state dict, ``module.`` prefix stripped."""
    sd = obj["state_dict"] if isinstance(obj, Mapping) and "state_dict" in obj else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ExpertCheckpointError(
            f"{where}: not a lip-sync expert checkpoint: expected a dict with a 'state_dict' of tensors or a "
            f"state dict of tensors, found a {type(sd).__name__}"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in ((str(k), v) for k, v in sd.items())}


def load_expert(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SyncNetColor:
    """Load ``lipsync_expert.pth`` (or one of our training checkpoints) strictly, in eval mode, on ``device``.

    Accepts the published training-checkpoint layout ``{"state_dict", "optimizer",
    "global_step", "global_epoch"}`` (keys possibly ``module.``-prefixed by
    DataParallel) and a bare state dict.  Read with ``weights_only=True``.  A
    checkpoint of :func:`lipsync.train.expert.train_expert` records its ``width``
    in ``config``; the published file has none (1.0).
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{where}: no such lip-sync expert checkpoint file")
    try:
        obj = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise ExpertCheckpointError(
            f"{where}: torch.load could not read it as a (weights-only) torch file ({exc.__class__.__name__}: "
            f"{str(exc)[:300]})"
        ) from exc
    sd = expert_state_dict(obj, where)
    config = obj.get("config") if isinstance(obj, Mapping) else None
    width = float(config.get("width", 1.0)) if isinstance(config, Mapping) else 1.0
    model = SyncNetColor(width)
    want, have = set(model.state_dict()), set(sd)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise ExpertCheckpointError(
            f"{where}: not a SyncNet_color (96 px) expert checkpoint: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]} (a generator file, or a fork with dropout layers "
            f"or another face size?)"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ExpertCheckpointError(f"{where}: expert keys match but tensors do not: {str(exc)[:400]}") from exc
    return model.to(device).eval()
