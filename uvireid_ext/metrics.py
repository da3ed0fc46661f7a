"""Adjusted Rand index of pseudo-labels against ground truth, under the three usual ways of
counting DBSCAN outliers (-1). Every figure carries the name of its convention:

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

__all__ = ["ARI_CONVENTIONS", "ari", "format_ari", "majority_identity", "match_precision"]

ARI_CONVENTIONS = ("outliers_one_cluster", "outliers_singletons", "outliers_excluded")


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
