"""Plain reference for the clustering ops: DBSCAN on CSR distances, segmented k-means.

Same signatures and semantics as ``torch.ops.uvireid_ext.dbscan`` / ``segmented_kmeans``
(see ``uvireid_ext/ops/cluster.py``); written as loops for clarity, small inputs only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["dbscan", "segmented_kmeans"]

_MASK = (1 << 64) - 1


def _mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _draw(seed: int, cluster: int, step: int) -> int:
    return _mix64(_mix64(_mix64(seed & _MASK) ^ cluster) ^ step)


def dbscan(crow: Tensor, col: Tensor, val: Tensor, eps: float, min_samples: int) -> Tensor:
    """Core points by neighbour count (self included), clusters = components of core-core edges,
    border points to the nearest core neighbour (ties to the lower index), ids by first appearance."""
    n = crow.numel() - 1
    crow_l, col_l, val_l = crow.tolist(), col.tolist(), val.tolist()
    within = (val <= torch.tensor(eps, dtype=val.dtype)).tolist()  # compare in the values' dtype
    neigh: list[list[tuple[float, int]]] = [
        [(val_l[k], col_l[k]) for k in range(crow_l[i], crow_l[i + 1]) if col_l[k] != i and within[k]]
        for i in range(n)
    ]
    core = [1 + len(neigh[i]) >= min_samples for i in range(n)]
    comp = [-1] * n
    for s in range(n):  # flood fill over core-core edges, in either direction
        if not core[s] or comp[s] >= 0:
            continue
        comp[s], stack = s, [s]
        while stack:
            i = stack.pop()
            for j in range(n):
                if (
                    core[j]
                    and comp[j] < 0
                    and (any(c == j for _, c in neigh[i]) or any(c == i for _, c in neigh[j]))
                ):
                    comp[j] = s
                    stack.append(j)
    raw = []
    for i in range(n):
        if core[i]:
            raw.append(comp[i])
        else:
            cores = sorted((d, j) for d, j in neigh[i] if core[j])
            raw.append(comp[cores[0][1]] if cores else -1)
    ids: dict[int, int] = {}
    out = [ids.setdefault(r, len(ids)) if r >= 0 else -1 for r in raw]
    return torch.tensor(out, dtype=torch.int64, device=crow.device).reshape(n)


def segmented_kmeans(
    x: Tensor, labels: Tensor, num_clusters: int, n: int, max_iter: int, tol: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Per cluster: hash-seeded k-means++ (D^2 draws), Lloyd steps, final assignment; m < n -> means.
    All on x / s, s the power of two nearest the largest row norm (the wrapper's scale-free rule),
    centres scaled back by s."""
    centers = torch.zeros(num_clusters, n, x.shape[1], dtype=torch.float32)
    assign = torch.full((x.shape[0],), -1, dtype=torch.int64)
    top = float(x.detach().double().norm(dim=1).max()) if x.shape[0] else 0.0
    log2s = math.frexp(top * math.sqrt(2.0))[1] - 1 if top > 0 else 0
    xc = (x.detach().double().cpu() * 2.0**-log2s).float()
    lab = labels.cpu()
    for c in range(num_clusters):
        idx = (lab == c).nonzero().flatten()
        m = idx.numel()
        pts = xc[idx]
        if m < n:
            if m > 0:
                centers[c] = pts.mean(0)
                assign[idx] = 0
            continue
        cen = torch.empty(n, x.shape[1])
        d2 = torch.empty(m)
        for s in range(n):
            if s == 0:
                pick = _draw(seed, c, 0) % m
            else:
                total = float(d2.double().sum())
                if total > 0:
                    u = (_draw(seed, c, s) >> 11) * (1.0 / 9007199254740992.0)
                    cum = torch.cumsum(d2.double(), 0)
                    hits = ((cum > u * total) & (d2 > 0)).nonzero()
                    pick = int(hits[0]) if hits.numel() else int((d2 > 0).nonzero()[-1])
                else:
                    pick = _draw(seed, c, s) % m
            cen[s] = pts[pick]
            dist = ((pts - cen[s]) ** 2).sum(1)
            d2 = dist if s == 0 else torch.minimum(d2, dist)
        part = torch.full((m,), -1, dtype=torch.int64)
        stop = False
        it = 0
        while True:
            new = torch.cdist(pts.double(), cen.double()).argmin(1)  # ties: argmin takes the first
            changed = int((new != part).sum())
            part = new
            if stop or changed == 0 or it == max_iter:
                break
            old = cen.clone()
            for k in range(n):
                if (part == k).any():
                    cen[k] = pts[part == k].mean(0)
            stop = float(((cen - old) ** 2).sum()) <= tol
            it += 1
        centers[c] = cen
        assign[idx] = part
    return (centers.double() * 2.0**log2s).float().to(x.device), assign.to(x.device)
