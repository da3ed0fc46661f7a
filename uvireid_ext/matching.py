"""Multi-Memory Learning and Matching (MMLM; docs/methods.md, MMM).

Each visible cluster v and infrared cluster r is summarised by n sub-centres (segmented k-means);
the cost C(v, r) = Σ_i min_j ‖K_r,i − K_v,j‖₂ (sum over IR memories, min over visible memories,
Euclidean, not squared) is computed on the features' device. Visible clusters are then matched to
IR clusters, either one-to-one by the Hungarian algorithm (the paper) or greedily by the per-row
argmin, many-to-one (the authors' code), and visible samples take their IR cluster's label. Every
cluster takes part (the authors' loops skip the last cluster of each modality; we do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .ops.cluster import segmented_kmeans

__all__ = ["MatchResult", "match_clusters", "mmlm", "mmlm_cost", "transfer_labels"]

Method = Literal["hungarian", "greedy"]


def mmlm_cost(vis_centers: Tensor, ir_centers: Tensor, block: int = 256) -> Tensor:
    """C[v, r] = Σ_i min_j ‖ir_centers[r, i] − vis_centers[v, j]‖₂.

    Args:
        vis_centers: [Cv, n, D] float sub-centres of the visible clusters.
        ir_centers: [Cr, n', D] sub-centres of the infrared clusters, same device and D.
        block: IR clusters per distance block (bounds memory at block·n'·Cv·n floats).

    Returns:
        [Cv, Cr] float32 cost on the inputs' device.
    """
    if vis_centers.dim() != 3 or ir_centers.dim() != 3 or vis_centers.shape[2] != ir_centers.shape[2]:
        raise ValueError(
            "mmlm_cost: expected vis_centers [Cv, n, D] and ir_centers [Cr, n', D] with the same D, got "
            f"{tuple(vis_centers.shape)} and {tuple(ir_centers.shape)}"
        )
    if vis_centers.device != ir_centers.device:
        raise ValueError(
            f"mmlm_cost: vis_centers on {vis_centers.device} but ir_centers on {ir_centers.device}"
        )
    cv, n, dim = vis_centers.shape
    cr, n_ir, _ = ir_centers.shape
    vis = vis_centers.float().reshape(cv * n, dim)
    cost = torch.empty(cv, cr, dtype=torch.float32, device=vis.device)
    for start in range(0, cr, block):
        ir = ir_centers[start : start + block].float()
        b = ir.shape[0]
        d = torch.cdist(ir.reshape(b * n_ir, dim), vis)  # [b·n', Cv·n]
        cost[:, start : start + b] = d.view(b, n_ir, cv, n).amin(3).sum(1).T
    return cost


def match_clusters(cost: Tensor, method: Method = "hungarian") -> Tensor:
    """Visible cluster → IR cluster from a [Cv, Cr] cost.

    ``hungarian``: one-to-one minimum-cost assignment (scipy ``linear_sum_assignment``); when
    Cv > Cr the visible clusters left over get -1. ``greedy``: argmin per visible cluster
    (ties to the lower IR id), several visible clusters may share one IR cluster.

    Returns:
        [Cv] int64 on the cost's device.
    """
    if cost.dim() != 2:
        raise ValueError(f"match_clusters: expected a 2-D [Cv, Cr] cost, got shape {tuple(cost.shape)}")
    if bool(torch.isnan(cost).any()):
        raise ValueError("match_clusters: cost holds NaN")
    cv, cr = cost.shape
    if cr == 0:
        return torch.full((cv,), -1, dtype=torch.int64, device=cost.device)
    if method == "greedy":
        return cost.argmin(1).to(torch.int64)
    if method != "hungarian":
        raise ValueError(f"match_clusters: expected method 'hungarian' or 'greedy', got {method!r}")
    rows, cols = linear_sum_assignment(cost.detach().double().cpu().numpy())
    out = torch.full((cv,), -1, dtype=torch.int64)
    out[torch.as_tensor(rows, dtype=torch.int64)] = torch.as_tensor(cols, dtype=torch.int64)
    return out.to(cost.device)


def transfer_labels(vis_labels: Tensor, match: Tensor, num_ir: int) -> Tensor:
    """Visible labels rewritten to their matched IR cluster's label (visible ← infrared).

    Noise (-1) stays -1; a visible cluster without a match (match -1, Hungarian with Cv > Cr)
    keeps its own identity under a fresh id num_ir, num_ir + 1, ... in cluster order.
    """
    if vis_labels.dim() != 1:
        raise ValueError(f"transfer_labels: expected 1-D vis_labels, got shape {tuple(vis_labels.shape)}")
    if match.device != vis_labels.device:
        raise ValueError(f"transfer_labels: match on {match.device} but vis_labels on {vis_labels.device}")
    if vis_labels.numel() and int(vis_labels.max()) >= match.numel():
        top = int(vis_labels.max())
        raise ValueError(
            f"transfer_labels: vis_labels holds id {top} but match covers {match.numel()} clusters"
        )
    unmatched = match < 0
    fresh = num_ir + torch.cumsum(unmatched.to(torch.int64), 0) - 1
    table = torch.where(unmatched, fresh, match)
    return torch.where(vis_labels >= 0, table[vis_labels.clamp(min=0)], vis_labels)


@dataclass
class MatchResult:
    """What :func:`mmlm` computed: new visible labels plus the pieces, for logging and tests."""

    vis_labels: Tensor  # [Nv] visible labels in the IR label space (-1 noise)
    ir_labels: Tensor  # [Nr] unchanged
    match: Tensor  # [Cv] IR cluster of every visible cluster (-1 unmatched)
    cost: Tensor  # [Cv, Cr]
    vis_centers: Tensor  # [Cv, n, D]
    ir_centers: Tensor  # [Cr, n, D]


def mmlm(
    vis_features: Tensor,
    vis_labels: Tensor,
    ir_features: Tensor,
    ir_labels: Tensor,
    *,
    n: int = 4,
    method: Method = "hungarian",
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-6,
) -> MatchResult:
    """MMLM end to end: sub-centres per cluster, cost, matching, label transfer visible ← infrared."""
    for name, f, lab in (("vis", vis_features, vis_labels), ("ir", ir_features, ir_labels)):
        if f.dim() != 2 or lab.dim() != 1 or lab.shape[0] != f.shape[0]:
            raise ValueError(
                f"mmlm: expected {name}_features [N, D] and {name}_labels [N], got {tuple(f.shape)} and "
                f"{tuple(lab.shape)}"
            )
        if lab.device != f.device:
            raise ValueError(f"mmlm: {name}_labels on {lab.device} but {name}_features on {f.device}")
    cv = int(vis_labels.max()) + 1 if vis_labels.numel() else 0
    cr = int(ir_labels.max()) + 1 if ir_labels.numel() else 0
    vc, _ = segmented_kmeans(
        vis_features.float(), vis_labels, n, num_clusters=cv, max_iter=max_iter, tol=tol, seed=seed
    )
    rc, _ = segmented_kmeans(
        ir_features.float(), ir_labels, n, num_clusters=cr, max_iter=max_iter, tol=tol, seed=seed
    )
    cost = mmlm_cost(vc, rc.to(vc.device))
    match = match_clusters(cost, method)
    new_vis = transfer_labels(vis_labels, match.to(vis_labels.device), cr)
    return MatchResult(new_vis, ir_labels, match, cost, vc, rc)
