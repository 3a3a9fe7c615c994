"""Wav2Lip generator (Prajwal et al., ACM MM 2020): face encoder, audio encoder, face decoder.

Written for dub-film; module and parameter names follow the published
checkpoints (``wav2lip.pth``, ``wav2lip_gan.pth`` of Rudrabha/Wav2Lip) exactly,
so that they load with ``strict=True``:

* every block is ``conv_block.0`` (``Conv2d`` or ``ConvTranspose2d``, with bias)
  then ``conv_block.1`` (``BatchNorm2d``), plus the block's input when it is
  residual, then ReLU;
* ``face_encoder_blocks.0..6`` (96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1),
  ``audio_encoder.0..12`` ((80, 16) mel window -> 512 x 1 x 1),
  ``face_decoder_blocks.0..6`` (each output concatenated with the matching
  encoder feature map), ``output_block.0`` (block), ``output_block.1`` (plain
  1x1 ``Conv2d``) and a sigmoid.

That gives 36,298,035 parameters and 352 state-dict entries (parameters plus
BatchNorm ``running_mean`` / ``running_var`` / ``num_batches_tracked``).

The input contract is :attr:`Wav2Lip.contract` (a :class:`Wav2LipContract`):
callers take the face size, masking row, colour order and mel window from it
instead of repeating numbers.  The mel features themselves are
:func:`lipsync.audio.mel.melspectrogram`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from lipsync.audio.mel import DEFAULT_MEL, MelContract

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "WAV2LIP_PARAMETERS",
    "WAV2LIP_STATE_DICT_KEYS",
    "Wav2Lip",
    "Wav2LipCheckpointError",
    "Wav2LipContract",
    "checkpoint_format",
    "load_wav2lip",
]

#: Face resize choices (``Wav2LipContract.resize``) -> OpenCV interpolation flag (cv2.INTER_LINEAR = 1, INTER_AREA = 3).
RESIZES = {"linear": 1, "area": 3}
#: Output conversion choices (``Wav2LipContract.output``).
OUTPUTS = ("truncate", "round")

#: Size of the published generator (tests check both).
WAV2LIP_PARAMETERS = 36_298_035
WAV2LIP_STATE_DICT_KEYS = 352


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class Wav2LipContract:
    """What the generator expects and returns; read it instead of hard-coding numbers.

    * face: ``(N, 6, face_size, face_size)`` float in ``value_range``, colour order
      ``color_order`` (OpenCV BGR, as the reference feeds ``cv2`` crops).  Channels
      0-2 are the target frame with rows ``mask_row:`` set to 0 (the lower half the
      network re-draws); channels 3-5 are the unmasked reference frame.
    * audio: ``(N, 1, n_mels, mel_step)`` -- one window of
      :func:`lipsync.audio.mel.melspectrogram` per video frame, starting at the
      frame's mel step (:func:`lipsync.audio.mel.mel_window_start`).
    * output: ``(N, 3, face_size, face_size)`` in ``value_range``, same colour order.

    ``fps_reference`` is the frame rate the model was trained at (25).  At any
    other rate the windows are still placed by time, never by counting frames.

    The *training contract* -- how the published checkpoints were trained and run
    (Rudrabha/Wav2Lip ``wav2lip_train.py`` and ``inference.py``) -- is the default,
    and every caller (engine, training sets, parity dumps) reads it from here:

    * ``mel.window_rounding = "floor"``: frame ``i``'s window starts at mel column
      ``floor(i * 80 / fps)`` (the reference's ``int(80. * i / fps)``, computed
      exactly; :func:`lipsync.audio.mel.mel_window_start`);
    * ``resize = "linear"``: the face crop is resized to ``face_size`` with
      ``cv2.resize``'s default bilinear interpolation (:meth:`resize_face`);
    * ``output = "truncate"``: the output becomes pixels as ``(x * 255).astype(uint8)``
      (:meth:`output_to_uint8`).

    ``"round"`` / ``"area"`` / ``"round"`` (dub-film's earlier choices: nearest mel
    column, area resampling, rounded output) remain as named options
    (:meth:`with_options`), for experiments and for models trained that way; the
    published weights never saw them.
    """

    face_size: int = 96
    mask_row: int = 48
    face_channels: int = 6
    out_channels: int = 3
    color_order: str = "BGR"
    value_range: tuple[float, float] = (0.0, 1.0)
    fps_reference: int = 25
    mel: MelContract = field(default=DEFAULT_MEL)
    resize: str = "linear"
    output: str = "truncate"

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {sorted(RESIZES)}, got {self.resize!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")

    def with_options(
        self, *, window_rounding: str | None = None, resize: str | None = None, output: str | None = None
    ) -> "Wav2LipContract":
        """This contract with other pipeline choices (e.g. ``window_rounding="round", resize="area",
        output="round"``: dub-film's pre-2026 behaviour, *not* what the published checkpoints saw)."""
        mel = self.mel if window_rounding is None else replace(self.mel, window_rounding=window_rounding)
        return replace(self, mel=mel, resize=resize or self.resize, output=output or self.output)

    @property
    def window_rounding(self) -> str:
        """How frame ``i``'s first mel column is rounded from ``i * 80 / fps`` (``"floor"``: the reference's ``int()``)."""
        return self.mel.window_rounding

    def window_start(self, frame_index: int, fps: Any) -> int:
        """First mel column of frame ``frame_index``'s window (:func:`lipsync.audio.mel.mel_window_start`)."""
        from lipsync.audio.mel import mel_window_start

        return mel_window_start(frame_index, fps, self)

    def resize_face(self, crop: "np.ndarray", size: int | None = None) -> "np.ndarray":
        """A uint8 BGR face crop resized to the model's ``(face_size, face_size)`` with :attr:`resize`.

        ``"linear"`` is ``cv2.resize``'s default (bilinear), what the reference's
        ``preprocess.py``/``wav2lip_train.py`` and ``inference.py`` use; ``"area"`` is
        ``cv2.INTER_AREA``.  ``size`` overrides ``face_size`` (a training set of
        another resolution)."""
        import cv2

        s = int(size or self.face_size)
        return cv2.resize(crop, (s, s), interpolation=RESIZES[self.resize])

    def output_to_uint8(self, out: "np.ndarray") -> "np.ndarray":
        """Generator output (``..., value_range`` floats) to uint8 pixels with :attr:`output`.

        ``"truncate"``: ``(x * 255).astype(uint8)`` as the reference's ``inference.py``
        (``pred * 255.`` then ``p.astype(np.uint8)``); ``"round"``: to the nearest level.
        Values are clipped to ``value_range`` first (a no-op after the sigmoid)."""
        import numpy as np

        lo, hi = self.value_range
        x = (np.clip(np.asarray(out, dtype=np.float32), lo, hi) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        if self.output == "round":
            x = x + np.float32(0.5)
        return x.astype(np.uint8)

    @property
    def mel_step(self) -> int:
        """Mel columns per window (16 = 200 ms)."""
        return self.mel.mel_step

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel.hop_length

    @property
    def mel_steps_per_second(self) -> Fraction:
        """Exact mel column rate (80 for 16 kHz / hop 200)."""
        return self.mel.steps_per_second

    @property
    def face_shape(self) -> tuple[int, int, int]:
        """Shape of one face input, ``(6, 96, 96)``."""
        return (self.face_channels, self.face_size, self.face_size)

    @property
    def audio_shape(self) -> tuple[int, int, int]:
        """Shape of one audio input, ``(1, 80, 16)``."""
        return (1, self.n_mels, self.mel_step)


# --------------------------------------------------------------------------- blocks


class _Block(nn.Module):
    """``conv_block = [Conv2d, BatchNorm2d]`` (+ input when residual), then ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError(f"residual block needs cin == cout and stride 1, got {cin}->{cout} stride {stride}")
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


class _UpBlock(nn.Module):
    """``conv_block = [ConvTranspose2d, BatchNorm2d]``, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _down(cin: int, cout: int, res: int, *, kernel: int = 3, stride: int | tuple[int, int] = 2, padding: int = 1) -> list[nn.Module]:
    """A (strided) block followed by ``res`` residual 3x3 blocks at ``cout`` channels."""
    return [_Block(cin, cout, kernel, stride, padding)] + [_Block(cout, cout, 3, 1, 1, residual=True) for _ in range(res)]


def _up(cin: int, cout: int, res: int, *, stride: int = 2, padding: int = 1, output_padding: int = 1) -> nn.Sequential:
    """A transposed-conv block followed by ``res`` residual 3x3 blocks."""
    layers: list[nn.Module] = [_UpBlock(cin, cout, 3, stride, padding, output_padding)]
    layers += [_Block(cout, cout, 3, 1, 1, residual=True) for _ in range(res)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- network


class Wav2Lip(nn.Module):
    """The Wav2Lip generator: ``forward(audio (N,1,80,16), face (N,6,96,96)) -> (N,3,96,96)``.

    The argument order (audio first) is the reference's.  Inputs are 4-D batches
    of independent frames; see :attr:`contract` for what goes in them.
    """

    contract: Wav2LipContract = Wav2LipContract()

    def __init__(self) -> None:
        super().__init__()
        # Identity encoder on the 6-channel (masked target + reference) face.
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(_Block(6, 16, 7, 1, 3)),  # 96x96
                nn.Sequential(*_down(16, 32, 2)),  # 48
                nn.Sequential(*_down(32, 64, 3)),  # 24
                nn.Sequential(*_down(64, 128, 2)),  # 12
                nn.Sequential(*_down(128, 256, 2)),  # 6
                nn.Sequential(*_down(256, 512, 1)),  # 3
                nn.Sequential(_Block(512, 512, 3, 1, 0), _Block(512, 512, 1, 1, 0)),  # 1
            ]
        )
        # Speech encoder on one (80 mel x 16 steps) window -> 512 x 1 x 1.
        self.audio_encoder = nn.Sequential(
            *_down(1, 32, 2, stride=1),  # 80x16
            *_down(32, 64, 2, stride=(3, 1)),  # 27x16
            *_down(64, 128, 2, stride=3),  # 9x6
            *_down(128, 256, 1, stride=(3, 2)),  # 3x3
            _Block(256, 512, 3, 1, 0),  # 1x1
            _Block(512, 512, 1, 1, 0),
        )
        # Decoder: each stage's output is concatenated with the encoder map of its size.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(_Block(512, 512, 1, 1, 0)),  # 1 (+512 -> 1024)
                _up(1024, 512, 1, stride=1, padding=0, output_padding=0),  # 3 (+512 -> 1024)
                _up(1024, 512, 2),  # 6 (+256 -> 768)
                _up(768, 384, 2),  # 12 (+128 -> 512)
                _up(512, 256, 2),  # 24 (+64 -> 320)
                _up(320, 128, 2),  # 48 (+32 -> 160)
                _up(160, 64, 2),  # 96 (+16 -> 80)
            ]
        )
        self.output_block = nn.Sequential(_Block(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        x = self.audio_encoder(audio)
        feats: list[torch.Tensor] = []
        f = face
        for block in self.face_encoder_blocks:
            f = block(f)
            feats.append(f)
        for i, block in enumerate(self.face_decoder_blocks):
            x = torch.cat((block(x), feats[len(feats) - 1 - i]), dim=1)
        return self.output_block(x)


# --------------------------------------------------------------------------- loading


class Wav2LipCheckpointError(ValueError):
    """A file that is not a Wav2Lip generator checkpoint (names the file and what was found)."""


def checkpoint_format(path: str | os.PathLike[str]) -> str:
    """``"torchscript"`` for a ``torch.jit.save`` archive, ``"torch"`` for anything else.

    A TorchScript archive is a zip holding ``<root>/code/`` and ``<root>/constants.pkl``;
    a ``torch.save`` zip holds ``data.pkl`` but no code; a legacy (pre-1.6) torch file
    is not a zip at all.
    """
    where = os.fspath(path)
    if not zipfile.is_zipfile(where):
        return "torch"
    with zipfile.ZipFile(where) as zf:
        names = zf.namelist()
    if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "torch"


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))[:8]}" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def _state_dict_of(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The generator's tensors from a loaded object: ``{"state_dict": ...}`` or a bare state dict.

    Strips the ``module.`` prefix that DataParallel training puts on every key.
    """
    found = _describe(obj)
    sd = obj["state_dict"] if isinstance(obj, Mapping) and "state_dict" in obj else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        if sd is not obj:
            found += f" whose 'state_dict' is {_describe(sd)}"
        raise Wav2LipCheckpointError(
            f"{where}: not a Wav2Lip checkpoint: expected a TorchScript archive, a dict with a 'state_dict' "
            f"of tensors, or a state dict of tensors; found {found}"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in ((str(k), v) for k, v in sd.items())}


def load_wav2lip(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Wav2Lip:
    """Load a Wav2Lip generator checkpoint into a :class:`Wav2Lip`, strictly, in eval mode, on ``device``.

    Accepts the three forms in circulation: the published training checkpoint
    ``{"state_dict": ..., "optimizer": ..., "global_step": ...}`` (keys may carry
    ``module.``), a bare state dict, and a TorchScript archive of the generator
    (its tensors are copied into a fresh :class:`Wav2Lip`, so every form gives the
    same module type and :attr:`Wav2Lip.contract`).  Anything else raises
    :class:`Wav2LipCheckpointError` naming the file and what was found -- for a
    state dict of the wrong architecture, the first missing and unexpected keys.

    Torch files are read with ``weights_only=True``; a TorchScript archive is
    program code run by ``torch.jit.load``, so load those only from trusted sources.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{where}: no such Wav2Lip checkpoint file")
    fmt = checkpoint_format(where)
    if fmt == "torchscript":
        try:
            scripted = torch.jit.load(where, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
            raise Wav2LipCheckpointError(
                f"{where}: looks like a TorchScript archive but torch.jit.load failed ({exc.__class__.__name__}: "
                f"{str(exc)[:300]})"
            ) from exc
        sd = _state_dict_of(dict(scripted.state_dict()), where)
    else:
        try:
            obj = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
            raise Wav2LipCheckpointError(
                f"{where}: not a Wav2Lip checkpoint: torch.load could not read it as a (weights-only) torch file "
                f"({exc.__class__.__name__}: {str(exc)[:300]})"
            ) from exc
        sd = _state_dict_of(obj, where)
    model = Wav2Lip()
    want, have = set(model.state_dict()), set(sd)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise Wav2LipCheckpointError(
            f"{where}: not a Wav2Lip (96x96) generator checkpoint: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]} (a SyncNet/discriminator file, or a "
            f"modified architecture such as a 192/256/384 px variant?)"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise Wav2LipCheckpointError(f"{where}: Wav2Lip keys match but tensors do not: {str(exc)[:400]}") from exc
    return model.to(device).eval()
