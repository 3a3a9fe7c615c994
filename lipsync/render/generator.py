"""The generator seam: what the engine needs from a lip-sync model, Wav2Lip's implementation of it,
and the parity dump of what a generator was given and gave.

A generator is any object with a ``contract`` (face size, audio sample rate, hop, mel
window; how a crop is resized: ``contract.resize_face``) and three steps, all on
NumPy arrays so the engine never sees the framework:

* ``preprocess(faces, mels)``: ``faces`` ``(N, S, S, 3)`` uint8 BGR crops resized by the
  contract, ``mels`` ``(N, 1, n_mels, mel_step)`` -> the model's inputs ``(face_input, mel)``;
* ``forward(face_input, mel)`` -> raw output ``(N, 3, S, S)`` (float, as the model gives it);
* ``postprocess(raw)`` -> ``(N, S, S, 3)`` uint8 BGR faces.

``is_out_of_memory(exc)`` (optional) tells the engine to halve its batch and retry.
Families are registered in :data:`GENERATORS` (name -> loader ``(path, device) ->
generator``); :func:`load_generator` picks the loader from the model store entry's
family, so a second model plugs in without editing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Generator(Protocol):
    contract: Any

    def preprocess(self, faces: np.ndarray, mels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def forward(self, face_input: np.ndarray, mel: np.ndarray) -> np.ndarray: ...

    def postprocess(self, raw: np.ndarray) -> np.ndarray: ...


class Wav2LipGenerator:
    """Wav2Lip (and any module with its input contract) behind the generator seam.

    Input: the crop with its lower half (rows from ``contract.mask_row``) zeroed, stacked
    with the unmasked crop as reference, 0..1 BGR, channels first; output converted to
    pixels as the published checkpoints were run (``contract.output_to_uint8``)."""

    def __init__(self, model: Any, device: str = "cpu", contract: Any = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.contract = contract or getattr(model, "contract", None) or type(model).contract

    def preprocess(self, faces: np.ndarray, mels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faces = faces.astype(np.float32) / 255.0  # N,S,S,3 BGR
        masked = faces.copy()
        masked[:, self.contract.mask_row :, :, :] = 0.0
        x = np.ascontiguousarray(np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2))  # N,6,S,S
        return x, mels.astype(np.float32)

    def forward(self, face_input: np.ndarray, mel: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(mel).to(self.device), torch.from_numpy(face_input).to(self.device))
        return out.float().cpu().numpy()

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        return self.contract.output_to_uint8(raw.transpose(0, 2, 3, 1))

    def is_out_of_memory(self, exc: BaseException) -> bool:
        if isinstance(exc, self.torch.cuda.OutOfMemoryError):
            self.torch.cuda.empty_cache()
            return True
        return False

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Wav2LipGenerator":
        from ..models.wav2lip import load_wav2lip

        return cls(load_wav2lip(path, device), device)


Loader = Callable[[Path, str], Any]

#: Generator families by name (the model store entry's ``family``): a loader ``(checkpoint, device)``.
GENERATORS: dict[str, Loader] = {"wav2lip": Wav2LipGenerator.load}


def register_generator(family: str, loader: Loader) -> None:
    """Make checkpoints of ``family`` loadable by :func:`load_generator` (and so by ``dub lipsync`` / ``dub run``)."""
    GENERATORS[family] = loader


def generator_family(checkpoint: str | Path, store: str | None = None) -> str:
    """The family of a checkpoint: its model store entry's, else ``wav2lip``."""
    from .. import store as model_store

    entry = model_store.REGISTRY.get(str(checkpoint))
    family = getattr(entry, "family", None)
    return family if family in GENERATORS else "wav2lip"


def load_generator(checkpoint: str | Path, device: str = "cpu", store: str | None = None, family: str | None = None) -> Any:
    """Resolve ``checkpoint`` (a store entry or a path) and load it with its family's loader."""
    from .. import store as model_store

    family = family or generator_family(checkpoint, store)
    if family not in GENERATORS:
        raise ValueError(f"{checkpoint}: no generator registered for family {family!r}; known: {', '.join(sorted(GENERATORS))}")
    path = model_store.resolve(checkpoint, store)
    return GENERATORS[family](Path(path), device)


def as_generator(model: Any, device: str = "cpu", contract: Any = None) -> Any:
    """``model`` itself when it implements :class:`Generator`, else a torch module wrapped as Wav2Lip."""
    if isinstance(model, Generator) and not hasattr(model, "parameters"):
        return model
    return Wav2LipGenerator(model, device, contract)


# --------------------------------------------------------------------------- parity dump


@dataclass(frozen=True)
class GeneratorIO:
    """What the generator got and gave for one face of one frame (float32, as fed to / returned by it).

    ``face_input`` ``(6, S, S)`` in 0..1 (masked target + reference, BGR), ``mel``
    ``(n_mels, mel_step)``, ``output`` ``(3, S, S)`` before conversion to pixels;
    ``frame`` is the frame index in the video, ``box`` the crop ``(x1, y1, x2, y2)``.
    """

    track_id: str
    frame: int
    box: tuple[int, int, int, int]
    face_input: np.ndarray
    mel: np.ndarray
    output: np.ndarray


DumpHook = Callable[[GeneratorIO], None]


class NpzDump:
    """A dump hook writing ``frame-NNNNNN.npz`` (``NNNNNN`` = frame index) per generated face under ``root``.

    Each file holds float32 ``face_input`` (6x96x96), ``mel`` (80x16) and ``output``
    (3x96x96), plus int ``box``.  ``per_track=True`` (several driven faces) puts
    each track's files in ``root/<track id>/``.
    """

    def __init__(self, root: str | Path, per_track: bool = False) -> None:
        self.root = Path(root)
        self.per_track = per_track
        self.written = 0

    def path_for(self, track_id: str, frame: int) -> Path:
        folder = self.root / _safe_name(track_id) if self.per_track else self.root
        return folder / f"frame-{frame:06d}.npz"

    def __call__(self, io: GeneratorIO) -> None:
        path = self.path_for(io.track_id, io.frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, face_input=io.face_input.astype(np.float32), mel=io.mel.astype(np.float32),
                 output=io.output.astype(np.float32), box=np.asarray(io.box, dtype=np.int64))
        self.written += 1


def _safe_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)).strip(".")
    return cleaned or "track"


