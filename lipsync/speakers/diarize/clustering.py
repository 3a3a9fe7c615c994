"""Step 3 of the embedded backend: how many speakers, and which embedding is whose.

See the :mod:`lipsync.speakers.diarize` docstring for the rule and the measurements behind it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .common import MODEL_SAMPLE_RATE, DiarizationParams


def cluster_embeddings(
    X: np.ndarray,
    *,
    linkage_method: str = "ward",
    min_cluster_size: int = 3,
    num_clusters: int | None = None,
    min_clusters: int | None = None,
    max_clusters: int | None = None,
    most_clusters: int = 50,
    threshold: float | None = None,
    accept_split: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> np.ndarray:
    """Agglomerative clustering of unit-norm embeddings ``X`` (n, d) -> labels 0..K-1.

    The dendrogram (``linkage_method``; ward, centroid and median on the Euclidean
    distance of the unit vectors, the others on cosine distance) is cut into K
    *large* clusters; clusters with fewer than ``min_cluster_size`` members (capped
    at 10 % of ``n``) are outliers that join the large cluster with the nearest
    centroid.

    K is ``num_clusters`` when given.  Otherwise the tree is divided top-down:
    a node is split into its two children when they pass ``accept_split(rows_a,
    rows_b)`` (when given) and their centroids are at least ``threshold`` apart in
    cosine distance (when given), and the children are then divided the same way;
    a node whose split is refused is one cluster (a child smaller than
    ``min_cluster_size`` is an outlier: the division goes on in its sibling).
    When that gives fewer than ``min_clusters`` (default 1) or more than
    ``max_clusters`` (at most ``most_clusters``) clusters, the tree is cut at that
    bound instead.  With neither test, it is cut at ``min_clusters``.
    """
    from scipy.cluster.hierarchy import fcluster, linkage, to_tree
    from scipy.spatial.distance import cdist

    n = len(X)
    if n <= 1:
        return np.zeros((n,), dtype=int)
    euclid = linkage_method in ("centroid", "median", "ward")
    Z = linkage(X, method=linkage_method, metric="euclidean" if euclid else "cosine")
    smallest = max(1, min(int(min_cluster_size), round(0.1 * n)))

    def split(k: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels with the k largest clusters of the first cut that has k large ones (or fewer at the end)."""
        for count in range(k, n + 1):
            labels = fcluster(Z, count, criterion="maxclust")
            ids, sizes = np.unique(labels, return_counts=True)
            order = np.argsort(-sizes, kind="stable")
            ids, sizes = ids[order], sizes[order]
            if np.count_nonzero(sizes >= smallest) >= k:
                return labels, ids[:k]
        # Never k clusters that large: the plain k-cluster cut, outliers included.
        labels = fcluster(Z, k, criterion="maxclust")
        return labels, np.unique(labels)

    def centroid(rows: np.ndarray) -> np.ndarray:
        return X[rows].mean(axis=0)

    def different(rows_a: np.ndarray, rows_b: np.ndarray) -> bool:
        if threshold is not None:
            ca, cb = centroid(rows_a), centroid(rows_b)
            if 1.0 - float(ca @ cb) / max(1e-12, float(np.linalg.norm(ca) * np.linalg.norm(cb))) < threshold:
                return False
        return accept_split is None or bool(accept_split(rows_a, rows_b))

    def divide(root) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        """Top-down: a node splits into its two children while they are different speakers; a child
        with fewer than ``smallest`` members is an outlier (it joins a cluster at the end)."""
        groups: list[np.ndarray] = []
        stack = [root]
        while stack:
            node = stack.pop()
            if node.is_leaf():
                groups.append(np.asarray(node.pre_order()))
                continue
            a, b = node.get_left(), node.get_right()
            if min(a.count, b.count) < smallest:
                big = a if a.count >= b.count else b
                if big.count >= smallest:
                    stack.append(big)
                else:
                    groups.append(np.asarray(node.pre_order()))
            elif different(np.asarray(a.pre_order()), np.asarray(b.pre_order())):
                stack += [b, a]
            else:
                groups.append(np.asarray(node.pre_order()))
        return groups

    lo = max(1, min(n, num_clusters or min_clusters or 1))
    hi = max(lo, min(n, num_clusters or max_clusters or most_clusters))
    labels, large = split(lo)
    if num_clusters is None and (threshold is not None or accept_split is not None):
        groups = divide(to_tree(Z))
        if lo <= len(groups) <= hi:
            labels = np.zeros((n,), dtype=int)  # 0 = outlier
            for i, rows in enumerate(groups):
                labels[rows] = i + 1
            large = np.arange(1, len(groups) + 1)
        elif len(groups) > hi:
            labels, large = split(hi)
    cents = np.stack([centroid(labels == k) for k in large])
    out = np.empty((n,), dtype=int)
    for i, k in enumerate(large):
        out[labels == k] = i
    others = ~np.isin(labels, large)
    if np.any(others):
        out[others] = np.argmin(cdist(X[others], cents, metric="cosine"), axis=1)
    return out


def _local_voices(binarized, params: DiarizationParams) -> int:
    """The most voices the segmentation model hears in one window: local speakers with at least
    ``min_local_seconds`` of speech alone in it (0 when there is no speech)."""
    data = binarized.data  # (chunks, frames, local speakers)
    if data.size == 0:
        return 0
    alone = data * (data.sum(axis=2, keepdims=True) == 1)
    seconds = alone.sum(axis=1) * (binarized.sliding_window.duration / data.shape[1])
    return int((seconds >= params.min_local_seconds).sum(axis=1).max())


def _voice_test(model, waveform: np.ndarray, params: DiarizationParams):  # type: ignore[no-untyped-def]
    """``differ(pairs of mel-frame selections) -> array``: for each pair, 1.0 when the segmentation
    model, given the two stretches of speech side by side in one window (``stitch_seconds`` each,
    0.2 s of silence between), gives them to different local speakers, 0.0 when to the same one,
    NaN when it hears no speech in one of them."""
    import torch

    hop = MODEL_SAMPLE_RATE // 100
    window = int(round(float(model.specifications.duration) * MODEL_SAMPLE_RATE))
    piece = min(int(params.stitch_seconds * MODEL_SAMPLE_RATE), (window - MODEL_SAMPLE_RATE // 5) // 2)
    second = window - piece
    frames = model.receptive_field
    num_frames = None

    def audio(sel: np.ndarray) -> np.ndarray:
        samples = (sel[:, None] * hop + np.arange(hop) - hop // 2).ravel()
        samples = samples[(samples >= 0) & (samples < len(waveform))]
        return waveform[samples][:piece]

    def differ(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        nonlocal num_frames
        if not pairs:
            return np.zeros((0,))
        batch = np.zeros((len(pairs), 1, window), dtype=np.float32)
        spans = []
        for i, (sa, sb) in enumerate(pairs):
            a, b = audio(sa), audio(sb)
            batch[i, 0, : len(a)] = a
            batch[i, 0, second : second + len(b)] = b
            spans.append((len(a), len(b)))
        with torch.inference_mode():
            scores = model(torch.from_numpy(batch).to(params.device)).cpu().numpy()
        num_frames = scores.shape[1]
        centres = np.array([frames[f].middle for f in range(num_frames)]) * MODEL_SAMPLE_RATE
        out = np.full((len(pairs),), np.nan)
        for i, (la, lb) in enumerate(spans):
            active = scores[i] > params.onset
            first = active[centres < la].sum(axis=0)
            last = active[(centres >= second) & (centres < second + lb)].sum(axis=0)
            if first.max() > 0 and last.max() > 0:
                out[i] = float(np.argmax(first) != np.argmax(last))
        return out

    return differ


def _pick(rows: np.ndarray, speech: list[np.ndarray], count: int) -> list[int]:
    """Up to ``count`` rows with the most speech, preferring ones that share no audio with those picked."""
    order = sorted(rows.tolist(), key=lambda r: -len(speech[r]))
    picked: list[int] = []
    for r in order:
        if len(picked) < count and all(len(np.intersect1d(speech[r], speech[p], assume_unique=True)) == 0 for p in picked):
            picked.append(r)
    for r in order:
        if len(picked) < count and r not in picked:
            picked.append(r)
    return picked


def _cluster(embeddings, binarized, speech, params: DiarizationParams, num_speakers, min_speakers, max_speakers,
             differ=None, local_voices: int = 1):  # type: ignore[no-untyped-def]
    """Cluster the (window, local speaker, block) embeddings.

    Returns ``(hard clusters (chunks, columns) with -2 = none, notes, info)``.  ``speech`` maps
    (chunk, column) to the mel frames of its embedding; ``differ`` is :func:`_voice_test`'s."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    notes: list[str] = []
    info: dict[str, Any] = {"local_voices": int(local_voices), "splits_tested": []}
    num_chunks, num_columns, dim = embeddings.shape
    blocks = max(1, params.embedding_blocks)
    num_local = num_columns // blocks
    data = binarized.data
    num_frames = data.shape[1]
    active = data.sum(axis=1) > 0
    valid = ~np.any(np.isnan(embeddings), axis=2)
    single = data.sum(axis=2, keepdims=True) == 1
    clean = (data * single).sum(axis=1)
    train = valid & (clean >= params.min_active_ratio * num_frames / blocks)
    if np.count_nonzero(train) < 2:
        train = valid  # little clean speech: use every embedding
    X = embeddings[train].astype(np.float64)
    rows_where = np.argwhere(train)  # (chunk, column) of each row of X
    rows_speech = [speech[(int(c), int(k))] for c, k in rows_where]
    row_keys = rows_where[:, 0] * num_local + rows_where[:, 1] // blocks  # (chunk, local speaker) of each row
    hard = np.full((num_chunks, num_columns), -2, dtype=np.int16)
    wanted = num_speakers or min_speakers or 1
    seconds = len(np.unique(np.concatenate(rows_speech))) / 100.0 if rows_speech else 0.0
    if len(X) < 2 and wanted > 1:
        notes.append(
            f"asked for {'' if num_speakers else 'at least '}{wanted} speakers, but only {seconds:.1f} s of speech in "
            f"{len(X)} stretch(es) long enough to tell voices apart (>= {params.min_embedding_seconds} s of one voice "
            "in a 2.5 s block): one speaker"
        )
    if len(X) == 0:
        hard[active] = 0
        return hard, notes, info

    min_frames = int(round(params.min_speaker_seconds * 100))

    def accept_split(rows_a: np.ndarray, rows_b: np.ndarray) -> bool:
        record: dict[str, Any] = {"sizes": [int(len(rows_a)), int(len(rows_b))]}
        info["splits_tested"].append(record)
        ca, cb = X[rows_a].mean(axis=0), X[rows_b].mean(axis=0)
        record["centroid_distance"] = round(1.0 - float(ca @ cb) / max(1e-12, float(np.linalg.norm(ca) * np.linalg.norm(cb))), 3)
        record["mean_distance"] = round(float(1.0 - (X[rows_a] @ X[rows_b].T).mean()), 3)
        heard = [len(np.unique(np.concatenate([rows_speech[r] for r in rows]))) for rows in (rows_a, rows_b)]
        record["seconds"] = [h / 100.0 for h in heard]
        if min(heard) < min_frames or differ is None:
            record["accepted"] = False
            return False
        # Windows where the model heard both clusters: one vote each, 1 when they are different local speakers.
        both = np.intersect1d(rows_where[rows_a, 0], rows_where[rows_b, 0])
        same = np.intersect1d(row_keys[rows_a], row_keys[rows_b]) // num_local  # windows with a shared local speaker
        natural = (~np.isin(both, same)).astype(float)
        record["natural"] = [int(natural.sum()), len(natural)]
        pa, pb = _pick(rows_a, rows_speech, params.stitch_pairs), _pick(rows_b, rows_speech, params.stitch_pairs)
        between = [(rows_speech[i], rows_speech[j]) for i in pa for j in pb]
        within = [
            (rows_speech[g[i]], rows_speech[g[j]])
            for g in (pa, pb) for i in range(len(g)) for j in range(i + 1, len(g))
            if len(np.intersect1d(rows_speech[g[i]], rows_speech[g[j]], assume_unique=True)) == 0
        ]
        d_between, d_within = np.concatenate([natural, differ(between)]), differ(within)
        rate_between = float(np.nanmean(d_between)) if np.any(np.isfinite(d_between)) else 0.0
        rate_within = float(np.nanmean(d_within)) if np.any(np.isfinite(d_within)) else 0.0
        record.update(between=round(rate_between, 3), within=round(rate_within, 3))
        heard_apart = rate_between - rate_within >= params.split_evidence
        # The embeddings alone decide only where the model did not hear the two as one voice in most
        # of the real windows with both.
        not_heard_as_one = 2 * natural.sum() >= len(natural)
        far = record["centroid_distance"] >= params.distinct_voice_distance
        record["accepted"] = ok = bool(heard_apart or (far and not_heard_as_one))
        return ok

    lowest = max(min_speakers or 1, min(local_voices, max_speakers or local_voices))
    labels = cluster_embeddings(
        X,
        linkage_method=params.linkage,
        min_cluster_size=params.min_cluster_size,
        num_clusters=num_speakers,
        min_clusters=lowest,
        max_clusters=max_speakers,
        accept_split=accept_split,
    )
    num_clusters = int(labels.max()) + 1
    if len(X) < 2 and wanted > 1:
        pass  # said above
    elif num_speakers and num_clusters < num_speakers:
        notes.append(
            f"asked for {num_speakers} speakers, but only {len(X)} stretch(es) of speech ({seconds:.1f} s) long enough to "
            f"tell voices apart: {num_clusters} speaker(s)"
        )
    elif min_speakers and num_clusters < min_speakers:
        notes.append(
            f"asked for at least {min_speakers} speakers, but only {len(X)} stretch(es) of speech ({seconds:.1f} s) long "
            f"enough to tell voices apart: {num_clusters} speaker(s)"
        )
    info["clusters"] = num_clusters
    centroids = np.stack([X[labels == k].mean(axis=0) for k in range(num_clusters)])
    sim = 2.0 - cdist(np.nan_to_num(embeddings.reshape(-1, dim)), centroids, metric="cosine").reshape(num_chunks, num_columns, num_clusters)
    sim[~valid] = -1.0  # no embedding: any cluster, after the others
    # Within one window and block, two local speakers never share a cluster (when there are enough).
    for c in range(num_chunks):
        for b in range(blocks):
            cols = [s * blocks + b for s in range(num_local) if active[c, s * blocks + b]]
            if not cols:
                continue
            rows, ks = linear_sum_assignment(sim[c, cols], maximize=True)
            for r, k in zip(rows, ks):
                hard[c, cols[r]] = k
            for col in cols:
                if hard[c, col] < 0:
                    hard[c, col] = int(np.argmax(sim[c, col]))
    return hard, notes, info
