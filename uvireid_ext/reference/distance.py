"""Plain references for the distance ops: kNN, k-reciprocal encoding, query expansion, Jaccard.

Dense N×N tensors and Python loops throughout: the op contracts (docs/architecture.md) written as directly as
possible, for tests on small inputs. Encodings are returned dense ([N, N] float64, zeros outside the
support); the ops return the same rows as CSR.
"""

from __future__ import annotations

import torch

__all__ = [
    "knn",
    "k_reciprocal_encode",
    "query_expansion",
    "jaccard_dense",
    "expansion_groups",
    "half_round_even",
]


def knn(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest rows of ``x`` [N, D] by exact squared Euclidean distance (float64 differences),
    self included, ties to the lower index. Returns (indices [N, k] int64, distances [N, k] float32)."""
    xd = x.double()
    n, dim = xd.shape
    if n == 0:
        return torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k)
    chunk = max(1, (1 << 24) // max(1, n * dim))  # rows per step: the difference tensor stays ~128 MB
    idx, dist = [], []
    for i in range(0, n, chunk):
        d = ((xd[i : i + chunk, None, :] - xd[None, :, :]) ** 2).sum(-1)
        dd, di = torch.sort(d, dim=1, stable=True)  # stable: equal distances keep index order
        idx.append(di[:, :k])
        dist.append(dd[:, :k])
    return torch.cat(idx).contiguous(), torch.cat(dist).float().contiguous()


def half_round_even(k1: int) -> int:
    """round(k1 / 2) with round-half-to-even, as numpy.around does (30 -> 15, 5 -> 2, 7 -> 4); the
    kernels' ``half_round_even``."""
    return round(k1 / 2)  # Python's round is round-half-to-even


def _reciprocal(rank: torch.Tensor, i: int, m: int) -> list[int]:
    """R(i, ·) from the first m ranked entries: j kept when i is among j's first m entries."""
    return [int(j) for j in rank[i, :m] if i in rank[int(j), :m].tolist()]


def k_reciprocal_encode(x: torch.Tensor, rank: torch.Tensor, k1: int) -> torch.Tensor:
    """V [N, N] float64: softmax(-(2 - 2<x_i, x_j>)) over the expanded k-reciprocal set of each row."""
    n = x.shape[0]
    m1 = min(k1 + 1, k1)  # the first k1+1 ranked entries, but only k1 columns exist
    mh = min(half_round_even(k1) + 1, k1)
    r1 = [_reciprocal(rank, i, m1) for i in range(n)]
    rh = [_reciprocal(rank, i, mh) for i in range(n)]
    xd = x.double()
    v = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        expanded = set(r1[i])
        base = set(r1[i])
        for c in r1[i]:
            cand = set(rh[c])
            if len(cand & base) > 2 / 3 * len(cand):
                expanded |= cand
        cols = torch.tensor(sorted(expanded), dtype=torch.long)
        d = 2 - 2 * (xd[cols] @ xd[i])
        v[i, cols] = torch.softmax(-d, dim=0)
    return v


def expansion_groups(
    rank: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor, pool: int, cap: int
) -> list[dict[tuple[int, int], list[int]]]:
    """For each row: the accepted neighbours of its first ``pool`` ranked entries, grouped by
    (outer, inner) id, at most ``cap`` per group in rank order."""
    out = []
    for i in range(rank.shape[0]):
        groups: dict[tuple[int, int], list[int]] = {}
        for j in rank[i, :pool].tolist():
            g = (int(outer[j]), int(inner[j]))
            members = groups.setdefault(g, [])
            if len(members) < cap:
                members.append(j)
        out.append(groups)
    return out


def query_expansion(
    v: torch.Tensor, rank: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor, pool: int, cap: int
) -> torch.Tensor:
    """Row i <- equal-weight mean over outer groups of (equal-weight mean over the inner groups of
    that outer group of (mean of the V rows in the group)). Plain k2 expansion is outer = inner = 0,
    pool = cap = k2."""
    result = torch.zeros_like(v)
    for i, groups in enumerate(expansion_groups(rank, outer, inner, pool, cap)):
        by_outer: dict[int, list[torch.Tensor]] = {}
        for (o, _), members in sorted(groups.items()):
            by_outer.setdefault(o, []).append(v[members].mean(0))
        outer_means = [torch.stack(means).mean(0) for _, means in sorted(by_outer.items())]
        result[i] = torch.stack(outer_means).mean(0)
    return result


def jaccard_dense(v: torch.Tensor) -> torch.Tensor:
    """d_ij = 1 - m/(2 - m), m = sum_c min(V_ic, V_jc), clipped at >= 0; [N, N] float64 from a dense V."""
    m = torch.stack([torch.minimum(v[i][None, :], v).sum(1) for i in range(v.shape[0])]) if len(v) else v
    return (1 - m / (2 - m)).clamp_min(0)
