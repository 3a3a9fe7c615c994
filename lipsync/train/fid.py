"""FID, LSE-D / LSE-C and L1 of a Wav2Lip generator on a split of a training set.

**FID** (Heusel et al. 2017) is measured with the pytorch-fid "FID Inception"
(:mod:`lipsync.train.fid_inception`: :class:`FIDInception`, loaded by
:func:`load_fid_inception`; its input is :func:`preprocess`'s).

Statistics are streamed (:class:`FeatureStats`: count, sum and sum of outer
products in float64, so memory does not grow with the number of images) and
compared with :func:`frechet_distance`::

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))

**Evaluation of a generator** (:func:`evaluate_generator`): the split's usable
clips are those :class:`lipsync.train.generator_sampler.GeneratorSampler` trains on (every
target window with real audio under its mel windows).  Each clip contributes a
run of consecutive, non-overlapping ``T``-frame windows from its first valid
target start, so the generated frames of a clip are one consecutive run; clips
are taken in an order shuffled by ``seed`` until ``max_windows`` windows are
taken (the last run cut short).  Each window is built as in training: target
crops with rows ``mask_row:`` zeroed, a reference window of the same clip
starting elsewhere (drawn from ``numpy.random.default_rng(seed)``), and the mel
window of each frame (``mel_offset`` as in training).  The generator runs in
eval mode under ``no_grad`` (its mode is restored afterwards).

* ``fid``: generated crops against the real crops of the same frames;
* ``lse_d`` / ``lse_c``: :func:`lipsync.qc.lse.score_lse` of each clip's run of
  generated crops against the clip's audio (from the run's first frame), averaged
  over runs as the reference averages over videos.  The 96 x 96 crop is taken
  as the face box of syncnet_python's crop (:func:`lipsync.qc.lse.crop_face`
  with centre and half-size ``S / 2``: the face in the upper part of a
  224 x 224 crop padded with grey below and at the sides);
* ``l1``: mean ``|G(x) - target|`` over the whole crops, in ``[0, 1]`` (the
  training loss's definition).

The result is deterministic for a fixed seed.  A split without a usable clip
gives ``{"windows": 0, "frames": 0}`` and ``None`` metrics.

No Prefect import here.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from lipsync.train.fid_inception import (
    FID_STATE_DICT_KEYS,
    FIDCheckpointError,
    FIDContract,
    FIDInception,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    load_fid_inception,
    preprocess,
)

if TYPE_CHECKING:
    from lipsync.train.data import ClipInfo, TrainingSet
    from lipsync.train.generator_sampler import GeneratorSampler

__all__ = [
    "FID_STATE_DICT_KEYS",
    "FIDCheckpointError",
    "FIDContract",
    "FIDInception",
    "FIDInceptionA",
    "FIDInceptionC",
    "FIDInceptionE_1",
    "FIDInceptionE_2",
    "FeatureStats",
    "evaluate_generator",
    "feature_stats",
    "fid",
    "fid_features",
    "frechet_distance",
    "load_fid_inception",
    "preprocess",
]


# --------------------------------------------------------------------------- features


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def fid_features(model: nn.Module, crops: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, D)`` float64 features of uint8 crops (the model's :class:`FIDContract`), on the model's device."""
    contract = getattr(model, "contract", FIDContract())
    with torch.no_grad():
        feats = model(preprocess(crops, contract, _model_device(model)))
    return feats.reshape(feats.shape[0], -1).double().cpu().numpy()


class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64; memory independent of the count).

    Keeps the count, the sum and the sum of outer products of ``x - shift`` (``shift``
    is the first vector seen: centring keeps the covariance exact when the mean
    is large against the spread).
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else int(self._shift.shape[0])

    def update(self, features: np.ndarray | torch.Tensor) -> "FeatureStats":
        """Add ``(N, D)`` features (any float dtype, numpy or torch); returns ``self``."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"FeatureStats: expected (N, D) features, got shape {x.shape}")
        if x.shape[0] == 0:
            return self
        if self._shift is None:
            d = x.shape[1]
            self._shift = x[0].copy()
            self._sum = np.zeros(d)
            self._outer = np.zeros((d, d))
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"FeatureStats: {x.shape[1]}-d features added to {self._shift.shape[0]}-d statistics")
        xc = x - self._shift
        self._sum += xc.sum(axis=0)
        self._outer += xc.T @ xc
        self.count += x.shape[0]
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("FeatureStats: no features")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (``ddof=1``), as ``numpy.cov(x, rowvar=False)``."""
        if self.count < 2:
            raise ValueError(f"FeatureStats: a covariance needs at least 2 feature vectors, got {self.count}")
        m = self._sum / self.count
        c = (self._outer - self.count * np.outer(m, m)) / (self.count - 1)
        return (c + c.T) / 2


def feature_stats(model: nn.Module, batches: Iterable[np.ndarray | torch.Tensor]) -> FeatureStats:
    """:class:`FeatureStats` of the model's features of every batch of uint8 crops."""
    stats = FeatureStats()
    for batch in batches:
        stats.update(fid_features(model, batch))
    return stats


# --------------------------------------------------------------------------- distance


def _sqrtm_error(root: np.ndarray, a: np.ndarray) -> float:
    """Relative residual ``||X X - A||_F / ||A||_F`` (scipy's documented error estimate of ``sqrtm``)."""
    norm = np.linalg.norm(a)
    return float(np.linalg.norm(root @ root - a) / norm) if norm > 0 else float(np.linalg.norm(root))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians: ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))``.

    ``scipy.linalg.sqrtm`` of ``S1 S2``; when it fails (non-finite, or a residual
    above 1e-3: the product is singular, e.g. fewer images than dimensions),
    ``eps * I`` is added to both covariances and the root taken again.  A
    negligible imaginary part (diagonal below 1e-3, pytorch-fid's tolerance) is
    dropped; a larger one raises ``ValueError``.
    """
    from scipy import linalg

    m1, m2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if m1.shape != m2.shape or m1.ndim != 1:
        raise ValueError(f"frechet_distance: means of different shapes {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: covariances {s1.shape} and {s2.shape}, expected ({d}, {d})")
    diff = m1 - m2

    def root(prod: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Matrix is singular": judged below by the residual
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return linalg.sqrtm(prod)

    prod = s1 @ s2
    covmean = root(prod)
    if not np.all(np.isfinite(covmean)) or _sqrtm_error(covmean, prod) > 1e-3:
        offset = np.eye(d) * eps
        prod = (s1 + offset) @ (s2 + offset)
        covmean = root(prod)
        if not np.all(np.isfinite(covmean)):
            raise ValueError(f"frechet_distance: sqrtm(S1 S2) is not finite even with {eps} * I added to both covariances")
        err = _sqrtm_error(covmean, prod)
        if err > 1e-3:
            warnings.warn(f"frechet_distance: sqrtm(S1 S2) is inaccurate (relative residual {err:.3g}) even with "
                          f"{eps} * I added to both covariances", RuntimeWarning, stacklevel=2)
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag))) if d else 0.0
        if imag > 1e-3:
            raise ValueError(f"frechet_distance: sqrtm(S1 S2) has an imaginary part of {imag:.3g} on its diagonal")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(model: nn.Module, real_batches: Iterable[np.ndarray | torch.Tensor],
        fake_batches: Iterable[np.ndarray | torch.Tensor], device: str | torch.device | None = None,
        *, eps: float = 1e-6) -> float:
    """FID between two iterables of uint8 BGR ``(N, H, W, 3)`` batches.

    The model is put in eval mode and moved to ``device`` (None: left where it is); features are streamed
    into :class:`FeatureStats`, so the iterables may be generators of any length.
    """
    if device is not None:
        model.to(device)
    model.eval()
    real, fake = feature_stats(model, real_batches), feature_stats(model, fake_batches)
    return frechet_distance(real.mean, real.cov, fake.mean, fake.cov, eps=eps)


# --------------------------------------------------------------------------- generator evaluation


def _split_view(dataset: "TrainingSet | str | os.PathLike[str]", split: str | None) -> "TrainingSet":
    from lipsync.train.data import TrainingSet

    if not isinstance(dataset, TrainingSet):
        return TrainingSet(dataset, split=split)
    if split is None or all(c.split == split for c in dataset.clips):
        return dataset
    view = copy.copy(dataset)
    view.clips = [c for c in dataset.clips if c.split == split]
    return view


def _window_inputs(sampler: "GeneratorSampler", clip: "ClipInfo", start: int, wrong: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (T,6,S,S), indiv_mels (T,1,80,16), y (T,3,S,S))`` of target ``start`` and reference ``wrong``, as
    :meth:`GeneratorSampler.sample` builds them."""
    from lipsync.audio.mel import mel_windows

    ds, t = sampler.dataset, sampler.frames
    faces = ds.faces(clip)
    y = (np.asarray(faces[start : start + t], dtype=np.float32) / 255.0).transpose(0, 3, 1, 2)
    ref = (np.asarray(faces[wrong : wrong + t], dtype=np.float32) / 255.0).transpose(0, 3, 1, 2)
    masked = y.copy()
    masked[:, :, sampler.contract.mask_row :] = 0.0
    x = np.concatenate([masked, ref], axis=1)
    indiv = mel_windows(ds.mel(clip), t, ds.fps, sampler.contract, start_frame=start + sampler.mel_offset)
    return np.ascontiguousarray(x), indiv, np.ascontiguousarray(y)


def _syncnet_view(faces: np.ndarray, contract: Any) -> np.ndarray:
    """syncnet_python's crop of each ``(S, S, 3)`` face crop taken as the face box: ``(n, 224, 224, 3)`` uint8."""
    from lipsync.qc.lse import crop_face

    half = faces.shape[1] / 2.0
    return np.stack([crop_face(np.ascontiguousarray(f), half, half, half, contract) for f in faces])


def _empty(split: str | None) -> dict[str, Any]:
    return {"split": split, "windows": 0, "frames": 0, "fid": None, "lse_d": None, "lse_c": None, "l1": None}


def evaluate_generator(
    generator: nn.Module,
    dataset: "TrainingSet | str | os.PathLike[str]",
    *,
    fid_model: nn.Module | None = None,
    syncnet: nn.Module | None = None,
    split: str | None = "val",
    max_windows: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    mel_offset: int = 0,
    frames: int = 5,
) -> dict[str, Any]:
    """FID, LSE-D / LSE-C and L1 of ``generator`` on ``split`` of ``dataset`` (see the module documentation).

    Returns ``{"split", "windows", "frames", "fid", "lse_d", "lse_c", "l1"}``:
    ``fid`` is None without ``fid_model`` (a :class:`FIDInception`, or any module
    with a :class:`FIDContract` ``contract`` mapping its input to features),
    ``lse_d`` / ``lse_c`` are None without ``syncnet``
    (:class:`lipsync.models.syncnet.SyncNet`).  ``batch_size`` counts windows
    per forward pass.  ``device`` (None: the generator's) is where everything runs:
    ``fid_model`` and ``syncnet`` are moved there; the generator must already be
    there (it is not moved: it may be the one being trained).
    """
    from lipsync.models.wav2lip import Wav2Lip
    from lipsync.qc.lse import lse_window_count, score_lse
    from lipsync.speakers.asd import tick_frames
    from lipsync.train.generator_sampler import GeneratorSampler

    if max_windows < 0 or batch_size < 1:
        raise ValueError(f"evaluate_generator: need max_windows >= 0 and batch_size >= 1, got {max_windows}, {batch_size}")
    ds = _split_view(dataset, split)
    gen_dev = _model_device(generator)
    dev = gen_dev if device is None else torch.device(device)
    if dev != gen_dev and not (dev.type == gen_dev.type and (dev.index is None or gen_dev.index is None)):
        raise ValueError(f"evaluate_generator: the generator is on {gen_dev}, evaluation was asked on {dev}; "
                         f"move it or pass device={str(gen_dev)!r}")
    if not ds.clips or max_windows == 0:
        return _empty(split)
    try:
        sampler = GeneratorSampler(ds, frames=frames, mel_offset=mel_offset)
    except ValueError:
        c = Wav2Lip.contract
        if ds.face_size != c.face_size or ds.sample_rate != c.sample_rate:
            raise
        return _empty(split)  # no clip long enough

    # ---- the plan: per clip (shuffled), consecutive non-overlapping windows from the first valid start
    t = sampler.frames
    rng = np.random.default_rng(seed)
    plan: list[tuple[int, "ClipInfo", list[tuple[int, int]]]] = []  # (run id, clip, [(start, reference start)])
    left = max_windows
    lo = max(0, -sampler.mel_offset)
    for ci in rng.permutation(len(sampler.clips)).tolist():
        if left <= 0:
            break
        clip, n_starts = sampler.clips[ci]
        positions = clip.frames - t + 1
        wins: list[tuple[int, int]] = []
        for start in range(lo, lo + n_starts, t)[:left]:
            wrong = int(rng.integers(positions - 1))
            wrong += wrong >= start
            wins.append((start, wrong))
        left -= len(wins)
        plan.append((len(plan), clip, wins))

    if syncnet is not None:
        syncnet.to(dev).eval()
        if ds.sample_rate != syncnet.contract.sample_rate:
            raise ValueError(f"{ds.root}: {ds.sample_rate} Hz audio, SyncNet needs {syncnet.contract.sample_rate}")
    if fid_model is not None:
        fid_model.to(dev).eval()
    real_stats, fake_stats = FeatureStats(), FeatureStats()
    l1_sum, l1_count = 0.0, 0
    lse: list[tuple[float, float]] = []
    runs: dict[int, list[np.ndarray]] = {}
    items = [(rid, clip, start, wrong) for rid, clip, wins in plan for start, wrong in wins]
    last_start = {rid: wins[-1][0] for rid, _, wins in plan}
    spf = ds.samples_per_frame

    def score_run(rid: int) -> None:
        gen = np.concatenate(runs.pop(rid))
        _, clip, wins = plan[rid]
        if syncnet is not None:
            audio = ds.audio(clip)
            ticks = len(tick_frames(len(gen), ds.fps, syncnet.contract.fps))
            # syncnet_python's window count (min(frames, audio frames) - 5); a run too short for it has no LSE.
            if lse_window_count(ticks, len(audio) - wins[0][0] * spf, contract=syncnet.contract) >= 1:
                s = score_lse(_syncnet_view(gen, syncnet.contract), audio, wins[0][0] * spf, syncnet, fps=ds.fps)
                lse.append((s.lse_d, s.lse_c))

    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            for a in range(0, len(items), batch_size):
                chunk = items[a : a + batch_size]
                parts = [_window_inputs(sampler, clip, start, wrong) for _, clip, start, wrong in chunk]
                x, indiv, y = (torch.from_numpy(np.stack([p[k] for p in parts])).to(dev) for k in range(3))
                b = len(chunk)
                g = generator(indiv.reshape(b * t, *indiv.shape[2:]), x.reshape(b * t, *x.shape[2:])).float()
                y_flat = y.reshape(b * t, *y.shape[2:])
                l1_sum += float((g - y_flat).abs().sum(dtype=torch.float64))
                l1_count += g.numel()
                # BGR pixels as inference makes them (the training contract's output conversion).
                fake = sampler.contract.output_to_uint8(g.permute(0, 2, 3, 1).cpu().numpy())
                if fid_model is not None:
                    real = np.concatenate([np.asarray(sampler.dataset.faces(clip)[start : start + t])
                                           for _, clip, start, _ in chunk])
                    real_stats.update(fid_features(fid_model, real))
                    fake_stats.update(fid_features(fid_model, fake))
                for j, (rid, _, start, _) in enumerate(chunk):
                    runs.setdefault(rid, []).append(fake[j * t : (j + 1) * t])
                    if start == last_start[rid]:
                        score_run(rid)
    finally:
        generator.train(was_training)

    n_windows = len(items)
    out = {"split": split, "windows": n_windows, "frames": n_windows * t, "fid": None, "lse_d": None, "lse_c": None,
           "l1": l1_sum / l1_count if l1_count else None}
    if fid_model is not None:
        out["fid"] = frechet_distance(real_stats.mean, real_stats.cov, fake_stats.mean, fake_stats.cov)
    if syncnet is not None and lse:
        out["lse_d"] = float(np.mean([d for d, _ in lse]))
        out["lse_c"] = float(np.mean([c for _, c in lse]))
    return out


def val_evaluator(dataset: "TrainingSet | str | os.PathLike[str]", *, windows: int = 64, fid_weights: str | None = "fid_inception",
                  syncnet_weights: str | None = "syncnet_v2", store: str | os.PathLike[str] | None = None, seed: int = 0,
                  warn: Callable[[str], None] | None = None) -> Callable[[nn.Module, int], dict[str, Any]] | None:
    """An ``evaluator(generator, step)`` for :func:`lipsync.train.wav2lip.train_wav2lip`: :func:`evaluate_generator`
    on the dataset's val split with the FID Inception and SyncNet weights that are in the model store.

    None (no evaluation) when ``windows`` is 0, under torchrun on a rank other than 0, or when
    the set has no val clip.  A weights entry not pulled into the store skips that metric with
    one ``warn`` line; a weights *path* that does not exist is an error.
    """
    from lipsync.models.syncnet import load_syncnet
    from lipsync.store import MissingWeightsError, resolve

    say = warn or (lambda msg: None)
    if windows == 0 or int(os.environ.get("RANK", "0")) != 0:
        return None
    val = _split_view(dataset, "val")
    if not val.clips:
        say("no val clips in the dataset: evaluation off")
        return None

    def load(kind: str, weights: str | None, loader: Callable[[Any], Any]) -> Any:
        if not weights:
            return None
        try:
            path = resolve(weights, store)
        except MissingWeightsError as exc:
            say(f"{kind} skipped in evaluation: {exc}")
            return None
        return loader(path)

    fid_model = load("FID", fid_weights, load_fid_inception)
    syncnet = load("LSE-D/LSE-C", syncnet_weights, load_syncnet)

    def evaluate(generator: nn.Module, step: int) -> dict[str, Any]:
        return evaluate_generator(generator, val, fid_model=fid_model, syncnet=syncnet, split="val", max_windows=windows,
                                  seed=seed, device=None)

    return evaluate
