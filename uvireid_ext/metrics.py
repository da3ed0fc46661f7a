"""Diagnostics against ground truth: the adjusted Rand index of pseudo-labels, the precision of
cross-modality associations, and how far a feature space mixes the two modalities.

The ARI comes under the three usual ways of counting DBSCAN outliers (-1); every figure carries the
name of its convention:

* ``outliers_one_cluster``: all outliers form one extra cluster (the labels as they are);
* ``outliers_singletons``: every outlier is a cluster of its own;
* ``outliers_excluded``: outliers are dropped before scoring (NaN when nothing is left).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import Tensor

from .ops.distance import knn

__all__ = ["ARI_CONVENTIONS", "MIXING_K", "ari", "format_ari", "majority_identity", "match_precision",
           "modality_mixing"]

ARI_CONVENTIONS = ("outliers_one_cluster", "outliers_singletons", "outliers_excluded")
MIXING_K = 40  # about the joint clustering's rank lists on SYSU-MM01 (k1 = 40 with self): what it can join


def _numpy(labels: Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"ari: expected 1-D {name}, got shape {arr.shape}")
    return arr.astype(np.int64)


def ari(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> dict[str, float]:
    """ARI of ``pred`` (pseudo-labels, -1 = outlier) against ``truth`` under each convention."""
    p, t = _numpy(pred, "pred"), _numpy(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"ari: pred and truth differ in length: {p.shape[0]} vs {t.shape[0]}")
    out = {"outliers_one_cluster": float(adjusted_rand_score(t, p))}
    single = p.copy()
    noise = single < 0
    single[noise] = (p.max(initial=-1) + 1) + np.arange(int(noise.sum()))
    out["outliers_singletons"] = float(adjusted_rand_score(t, single))
    keep = ~noise
    out["outliers_excluded"] = float(adjusted_rand_score(t[keep], p[keep])) if keep.any() else math.nan
    return out


def format_ari(scores: dict[str, float]) -> str:
    """One line, each figure labelled with its convention."""
    return ", ".join(f"ARI[{k}]={scores[k]:.4f}" for k in ARI_CONVENTIONS)


def majority_identity(labels: Tensor, truth: Tensor, num_clusters: int) -> Tensor:
    """[num_clusters] the most frequent ground-truth identity of each cluster (ties: the lower id; -1 for
    an empty cluster). ``labels`` -1 = outlier, ignored."""
    labels, truth = labels.cpu(), truth.cpu()
    keep = labels >= 0
    lab, tru = labels[keep], truth[keep]
    out = torch.full((num_clusters,), -1, dtype=torch.int64)
    if lab.numel() == 0:
        return out
    ids, tru = torch.unique(tru, return_inverse=True)
    counts = torch.zeros(num_clusters, ids.numel(), dtype=torch.int64)
    counts.index_put_((lab, tru), torch.ones_like(lab), accumulate=True)
    best = counts.argmax(dim=1)  # first maximum: the lower id
    return torch.where(counts.sum(dim=1) > 0, ids[best], out)


def match_precision(pairs: Tensor, major_v: Tensor, major_r: Tensor) -> float:
    """Share of matched (visible cluster, infrared cluster) ``pairs`` [M, 2] whose majority identities
    (:func:`majority_identity`) agree: how often a cross-modality association is right. NaN for none."""
    if pairs.numel() == 0:
        return math.nan
    a, b = pairs[:, 0].cpu(), pairs[:, 1].cpu()
    return float((major_v[a] == major_r[b]).double().mean())


def modality_mixing(features: Tensor, is_ir: Tensor, pid: Tensor, k: int = MIXING_K,
                    chunk: int = 2048) -> dict[str, float]:
    """How far ``features`` [N, D] mix the two modalities (``is_ir`` [N] bool; ``pid`` [N] ground truth).

    * ``cross_share``: the share of the other modality among every image's ``k`` nearest other images
      (squared Euclidean, as the clustering ranks them). Joint clustering and its query expansion can only
      join what these lists join: near 0, no cluster holds both modalities, whatever the identities.
    * ``cross_nn_precision``: the share of images whose nearest image of the other modality has their
      identity, both directions pooled, over the images whose identity the other modality holds (NaN when
      none does). It bounds what a matching of cross-modality neighbours can get right. Distances in
      float64, ties to the lower index.

    ``k`` is cut to N − 1 (the figure then covers every other image); NaN for fewer than 2 images or a
    single modality. ``chunk`` rows of one modality at a time: memory O(chunk · N)."""
    n = features.shape[0] if features.dim() == 2 else -1
    if n < 0 or is_ir.shape != (n,) or pid.shape != (n,):
        raise ValueError(f"modality_mixing: expected features [N, D], is_ir [N] and pid [N], got "
                         f"{tuple(features.shape)}, {tuple(is_ir.shape)} and {tuple(pid.shape)}")
    if is_ir.dtype != torch.bool:
        raise ValueError(f"modality_mixing: is_ir must be a bool tensor (True = infrared), got {is_ir.dtype}")
    if k < 1 or chunk < 1:
        raise ValueError(f"modality_mixing: k and chunk must be >= 1, got k={k}, chunk={chunk}")
    if not bool(torch.isfinite(features).all()):
        bad = int((~torch.isfinite(features)).any(1).nonzero()[0])
        raise ValueError(f"modality_mixing: features row {bad} is not finite")
    is_ir, pid = is_ir.to(features.device), pid.to(features.device)
    kk = min(k, max(n - 1, 0))
    if n < 2 or bool(is_ir.all()) or not bool(is_ir.any()):
        return {"cross_share": math.nan, "cross_nn_precision": math.nan, "k": float(kk)}
    with torch.no_grad():
        return _mixing(features.detach().float(), is_ir, pid, kk, chunk)


def _mixing(x: Tensor, is_ir: Tensor, pid: Tensor, kk: int, chunk: int) -> dict[str, float]:
    n = x.shape[0]
    idx, _ = knn(x, kk + 1)
    # self is usually first, but a duplicate row of lower index ranks before it: drop self where it
    # is, else the last entry
    own = idx == torch.arange(n, device=idx.device)[:, None]
    drop = torch.where(own.any(1), own.int().argmax(1), torch.full((n,), kk, device=idx.device))
    keep = torch.ones_like(own)
    keep[torch.arange(n, device=idx.device), drop] = False
    nbrs = idx[keep].view(n, kk)
    share = float((is_ir[nbrs] != is_ir[:, None]).double().mean())

    # nearest other-modality image, both directions from one pass over visible-row chunks
    vis, ir = (~is_ir).nonzero().squeeze(1), is_ir.nonzero().squeeze(1)
    xv, xi = x[vis].double(), x[ir].double()  # float64: near-ties decided by the data, not by rounding
    sq_v, sq_i = (xv * xv).sum(1), (xi * xi).sum(1)
    best_i = torch.empty(vis.numel(), dtype=torch.int64, device=x.device)
    col_min = torch.full((ir.numel(),), math.inf, dtype=torch.float64, device=x.device)
    col_arg = torch.zeros(ir.numel(), dtype=torch.int64, device=x.device)
    for s in range(0, vis.numel(), chunk):
        d = sq_v[s : s + chunk, None] + sq_i[None, :] - 2 * xv[s : s + chunk] @ xi.T
        best_i[s : s + chunk] = d.argmin(1)
        m, a = d.min(0)
        better = m < col_min  # strict: an earlier chunk (lower visible index) wins ties
        col_min, col_arg = torch.where(better, m, col_min), torch.where(better, a + s, col_arg)
    pv, pi = pid[vis], pid[ir]
    hit = torch.cat([pi[best_i] == pv, pv[col_arg] == pi])
    both = torch.cat([torch.isin(pv, pi[pi >= 0]), torch.isin(pi, pv[pv >= 0])])
    prec = float(hit[both].double().mean()) if bool(both.any()) else math.nan
    return {"cross_share": share, "cross_nn_precision": prec, "k": float(kk)}
