"""The Wav2Lip generator's training samples, drawn from a training set (:mod:`lipsync.train.data`).

The samples of :func:`lipsync.train.wav2lip.train_wav2lip` (the recipe of Prajwal et
al., ACM MM 2020).  Pick a clip (uniformly among the usable clips of the split, as
the reference picks a video), a window of ``T = 5`` consecutive frames (the target)
and a second window of 5 frames starting elsewhere in the same clip (the
reference, "wrong" window).  Per target frame ``i`` the generator reads
``(6, 96, 96)``: the target crop with rows ``48:`` zeroed, then the reference
crop (BGR, ``[0, 1]``, :attr:`lipsync.models.wav2lip.Wav2Lip.contract`), and the
mel window of frame ``i``: 16 columns from :func:`lipsync.audio.mel.mel_window_start`
(the same window our inference engine feeds, so training and inference agree;
the reference's training script reads the window of frame ``i - 2`` while its
inference reads frame ``i``: ``mel_offset=-2`` reproduces its training).  The
expert reads the window of the first target frame.  Only targets whose 5 windows
lie inside the clip's real audio are drawn (no silence padding in training).
The sample of step ``s`` is drawn from ``numpy.random.default_rng([seed, rank, s])``,
so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from lipsync.audio.mel import mel_window_start, mel_windows
from lipsync.train.data import ClipInfo, TrainingSet

__all__ = ["GeneratorSampler"]


class GeneratorSampler:
    """Draws the generator's training samples from a :class:`TrainingSet` (see the module doc)."""

    def __init__(self, dataset: TrainingSet, *, frames: int = 5, mel_offset: int = 0) -> None:
        from lipsync.models.wav2lip import Wav2Lip

        self.dataset = dataset
        self.contract = Wav2Lip.contract
        self.frames = int(frames)
        self.mel_offset = int(mel_offset)
        if dataset.face_size != self.contract.face_size:
            raise ValueError(f"{dataset.root}: face_size {dataset.face_size}, the generator needs {self.contract.face_size}")
        if dataset.sample_rate != self.contract.sample_rate:
            raise ValueError(f"{dataset.root}: {dataset.sample_rate} Hz audio, the generator needs {self.contract.sample_rate}")
        self.clips: list[tuple[ClipInfo, int]] = []  # (clip, number of valid target starts)
        for clip in dataset.clips:
            starts = self._valid_starts(clip)
            # A reference window must be able to start elsewhere: at least two window positions.
            if starts > 0 and clip.frames - self.frames + 1 >= 2:
                self.clips.append((clip, starts))
        if not self.clips:
            raise ValueError(
                f"{dataset.root}: no clip long enough to train on ({len(dataset.clips)} clips; each needs at least "
                f"{self.frames + 1} frames with audio under the last window)"
            )

    def _valid_starts(self, clip: ClipInfo) -> int:
        """How many target windows ``[s, s + T)``, ``s >= max(0, -mel_offset)``, have all mel windows inside the audio."""
        cols = self.dataset.mel(clip).shape[1]
        lo, n = max(0, -self.mel_offset), 0
        for s in range(lo, clip.frames - self.frames + 1):  # the last window's start grows with s: stop at the first miss
            if mel_window_start(s + self.frames - 1 + self.mel_offset, self.dataset.fps) + self.contract.mel_step > cols:
                break
            n += 1
        return n

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x (T,6,S,S), indiv_mels (T,1,80,16), mel (1,80,16), y (T,3,S,S))`` float32."""
        clip, n_starts = self.clips[int(rng.integers(len(self.clips)))]
        lo = max(0, -self.mel_offset)
        start = lo + int(rng.integers(n_starts))
        positions = clip.frames - self.frames + 1
        wrong = int(rng.integers(positions - 1))
        wrong += wrong >= start  # any other start
        faces = self.dataset.faces(clip)
        target = np.asarray(faces[start : start + self.frames], dtype=np.float32) / 255.0  # (T,S,S,3)
        ref = np.asarray(faces[wrong : wrong + self.frames], dtype=np.float32) / 255.0
        y = target.transpose(0, 3, 1, 2)  # (T,3,S,S)
        masked = y.copy()
        masked[:, :, self.contract.mask_row :] = 0.0
        x = np.concatenate([masked, ref.transpose(0, 3, 1, 2)], axis=1)
        mel = self.dataset.mel(clip)
        indiv = mel_windows(mel, self.frames, self.dataset.fps, self.contract, start_frame=start + self.mel_offset)
        expert = mel_windows(mel, 1, self.dataset.fps, self.contract, start_frame=start)[0]
        return np.ascontiguousarray(x), indiv, expert, np.ascontiguousarray(y)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
        parts = [self.sample(rng) for _ in range(size)]
        return tuple(torch.from_numpy(np.stack([p[k] for p in parts])) for k in range(4))
