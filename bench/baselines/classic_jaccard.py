"""The classic clustering path users run today (Cluster-Contrast / ADCA / PGM / MMM): dense
k-reciprocal Jaccard distance in numpy (``compute_jaccard_distance``, plain k2 query expansion),
then scikit-learn DBSCAN on the dense matrix. Written by us from the description in
``shared/reference/methods.md`` §1; exact kNN by brute force stands in for faiss ``IndexFlatL2``."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN


def _initial_rank(features: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """The k nearest rows by squared Euclidean distance, self first (what faiss returns)."""
    sq = (features**2).sum(1)
    out = np.empty((features.shape[0], k), dtype=np.int64)
    for s in range(0, features.shape[0], block):
        d = sq[s : s + block, None] + sq[None, :] - 2 * features[s : s + block] @ features.T
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out


def _k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def compute_jaccard_distance(features: np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """Dense [N, N] float32 Jaccard distance, as the reference repositories compute it."""
    f = np.ascontiguousarray(features, dtype=np.float32)
    n = f.shape[0]
    rank = _initial_rank(f, k1)
    half = int(np.around(k1 / 2))
    nn_k1 = [_k_reciprocal(rank, i, k1) for i in range(n)]
    nn_half = [_k_reciprocal(rank, i, half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        index = nn_k1[i]
        expansion = index
        for cand in index:
            cand_k = nn_half[cand]
            if len(np.intersect1d(cand_k, index)) > 2 / 3 * len(cand_k):
                expansion = np.append(expansion, cand_k)
        expansion = np.unique(expansion)
        dist = 2 - 2 * f[i] @ f[expansion].T
        w = np.exp(-dist)
        v[i, expansion] = w / w.sum()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(0)
        v = v_qe
        del v_qe
    inv_index = [np.where(v[:, c] != 0)[0] for c in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        nonzero = np.where(v[i] != 0)[0]
        for c in nonzero:
            rows = inv_index[c]
            temp_min[0, rows] += np.minimum(v[i, c], v[rows, c])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0
    return jaccard


def classic_labels(features: np.ndarray, k1: int, k2: int, eps: float, min_samples: int = 4) -> np.ndarray:
    """Features → DBSCAN pseudo-labels, the classic way."""
    dist = compute_jaccard_distance(features, k1, k2)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1).fit_predict(dist)
