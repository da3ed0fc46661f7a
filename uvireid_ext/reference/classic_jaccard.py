"""The classic clustering Jaccard distance as users run it today, ported to NumPy by us from the
description in docs/architecture.md, op contracts (cluster-contrast's compute_jaccard_distance, shared
verbatim by ADCA, PGM and MMM). It is the baseline of the benchmarks and the correctness oracle at
realistic sizes. Faithful on purpose: dense N×N float32 V and V_qe, per-row Python loops, a dense
per-row accumulator in the Jaccard step, float32 dot products for the weights.

The kNN step of the original is faiss ``IndexFlatL2`` (exact squared L2 from a float32 GEMM); here
it is the same computation in NumPy, blockwise.
"""

from __future__ import annotations

import numpy as np


def initial_rank(features: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Indices of the k nearest rows (self included) by squared L2 from a float32 GEMM, as faiss."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    sq = (x * x).sum(1)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for s in range(0, x.shape[0], block):
        d = sq[s : s + block, None] + sq[None, :] - 2 * (x[s : s + block] @ x.T)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out


def k_reciprocal_neigh(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def encode(x: np.ndarray, rank: np.ndarray, k1: int) -> np.ndarray:
    """Dense [N, N] float32 V: k-reciprocal sets, the 2/3 expansion, softmax(-dist) weights."""
    n = x.shape[0]
    nn_k1 = [k_reciprocal_neigh(rank, i, k1) for i in range(n)]
    nn_k1_half = [k_reciprocal_neigh(rank, i, int(np.around(k1 / 2))) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        k_recip = nn_k1[i]
        expansion = k_recip
        for candidate in k_recip:
            cand = nn_k1_half[candidate]
            if len(np.intersect1d(cand, k_recip)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        if expansion.size == 0:  # more exact copies of row i than its rank list holds: softmax of nothing
            continue
        dist = 2 - 2 * (x[i] @ x[expansion].T)
        e = np.exp(-(dist - dist.min()))  # softmax(-dist)
        v[i, expansion] = e / e.sum()
    return v


def expand(v: np.ndarray, rank: np.ndarray, k2: int, modality: np.ndarray | None = None) -> np.ndarray:
    """Local query expansion: mean of the V rows of the first k2 ranked (per modality, then averaged)."""
    if k2 == 1:
        return v
    v_qe = np.zeros_like(v, dtype=np.float32)
    for i in range(v.shape[0]):
        neighbours = rank[i, :k2]
        if modality is None:
            v_qe[i] = np.mean(v[neighbours], axis=0)
        else:
            means = [np.mean(v[neighbours[modality[neighbours] == m]], axis=0) for m in np.unique(modality[neighbours])]
            v_qe[i] = np.mean(means, axis=0)
    return v_qe


def jaccard(v: np.ndarray) -> np.ndarray:
    """Dense Jaccard distance through the inverted index, one dense accumulator row at a time."""
    n = v.shape[0]
    inv_index = [np.where(v[:, c] != 0)[0] for c in range(n)]
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros((1, n), dtype=np.float32)
        nonzero = np.where(v[i] != 0)[0]
        rows = [inv_index[c] for c in nonzero]
        for j, c in enumerate(nonzero):
            temp_min[0, rows[j]] += np.minimum(v[i, c], v[rows[j], c])
        out[i] = 1 - temp_min / (2 - temp_min)
    return np.maximum(out, 0)


def classic_jaccard(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    modality: np.ndarray | None = None,
    rank: np.ndarray | None = None,
) -> np.ndarray:
    """Dense [N, N] float32 Jaccard distance; ``modality`` switches to the modality-balanced k2
    expansion (MMM's compute_modal_invariant_jaccard_distance)."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if rank is None:
        rank = initial_rank(x, k1)
    return jaccard(expand(encode(x, rank, k1), rank, k2, modality))


def classic_labels(features: np.ndarray, k1: int, k2: int, eps: float, min_samples: int = 4) -> np.ndarray:
    """Features -> DBSCAN pseudo-labels the classic way: dense Jaccard, then scikit-learn DBSCAN."""
    from sklearn.cluster import DBSCAN

    dist = classic_jaccard(features, k1, k2)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=-1).fit_predict(dist)
