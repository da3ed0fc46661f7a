"""The classic k-reciprocal re-ranking (Zhong et al., CVPR 2017) as re-ID code bases run it today,
ported to NumPy by us from its description in docs/rerank.md: dense N × N float32 matrices, a full
argsort per row, per-row Python loops. It is the benchmark baseline and the correctness oracle of
``uvireid_ext.re_rank`` and ``uvireid_ext.compat.re_ranking``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classic_re_ranking"]


def _reciprocal(rank: np.ndarray, i: int, depth: int) -> np.ndarray:
    forward = rank[i, :depth]
    backward = rank[forward, :depth]
    return forward[np.where(backward == i)[0]]


def classic_re_ranking(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
                       lambda_value: float = 0.3) -> np.ndarray:
    """[Q, G] float32 re-ranked distances from plain (unsquared) distance matrices."""
    q = q_g.shape[0]
    full = np.concatenate([np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    sq = np.power(full, 2).astype(np.float32)
    w = np.transpose(sq / np.max(sq, axis=0))  # column-max normalisation, then the transpose
    n = w.shape[0]
    v = np.zeros_like(w, dtype=np.float32)
    rank = np.argsort(w).astype(np.int32)
    half = int(np.around(k1 / 2))
    for i in range(n):
        k_recip = _reciprocal(rank, i, k1 + 1)
        expansion = k_recip
        for c in k_recip:
            cand = _reciprocal(rank, c, half + 1)
            if len(np.intersect1d(cand, k_recip)) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-w[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    w_q = w[:q]
    if k2 != 1:
        v_qe = np.zeros_like(v, dtype=np.float32)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    inverted = [np.where(v[:, c] != 0)[0] for c in range(n)]
    jaccard = np.zeros((q, n), dtype=np.float32)
    for i in range(q):
        acc = np.zeros((1, n), dtype=np.float32)
        cols = np.where(v[i] != 0)[0]
        for c in cols:
            rows = inverted[c]
            acc[0, rows] = acc[0, rows] + np.minimum(v[i, c], v[rows, c])
        jaccard[i] = 1 - acc / (2 - acc)
    final = jaccard * (1 - lambda_value) + w_q * lambda_value
    return final[:, q:].astype(np.float32)
