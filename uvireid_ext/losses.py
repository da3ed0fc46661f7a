"""Losses of the ECUL / MMM recipes: ClusterNCE, instance NCE, SCA (intra, inter via mmd2),
batch-hard triplet and confidence-weighted cross-entropy (``docs/methods.md``, MMM and ECUL)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .ops.mmd import mmd2

__all__ = [
    "batch_hard_triplet",
    "cluster_nce",
    "instance_nce",
    "mmd_alignment",
    "sca_inter",
    "sca_intra",
    "weighted_cross_entropy",
]


def cluster_nce(
    x: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor, temp: float = 0.05
) -> torch.Tensor:
    """ClusterNCE: cross-entropy of ⟨x̂, c⟩/τ over all cluster memories (cluster-contrast ``CM``).

    x: [B, D] (normalised here), memory: [C, D] (used as is, no gradient), labels: [B] in [0, C).
    """
    logits = F.normalize(x, dim=1) @ memory.detach().t() / temp
    return F.cross_entropy(logits, labels)


def instance_nce(
    x: torch.Tensor,
    slots: torch.Tensor,
    slot_labels: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    temp: float = 0.05,
) -> torch.Tensor:
    """Instance-level NCE (MPJL ``HybridMemory``): p(c|x) = Σ_{k: y_k=c} e^{⟨x̂,m_k⟩/τ} / Σ_k e^{⟨x̂,m_k⟩/τ},
    loss = mean −log(p(y|x) + 1e−6).

    x: [B, D]; slots: [N, D] one per training image; slot_labels: [N] in [0, num_labels) (outliers
    carry singleton labels, see :func:`uvireid_ext.memory.singleton_labels`); labels: [B].
    """
    logits = F.normalize(x, dim=1) @ slots.detach().t() / temp
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values.detach())  # stable; ratio unchanged
    per_class = e.new_zeros(x.shape[0], num_labels).index_add_(1, slot_labels, e)
    p = per_class.gather(1, labels[:, None]).squeeze(1) / e.sum(dim=1)
    return -torch.log(p + 1e-6).mean()


def sca_intra(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    distance: Literal["l1", "l2sq"] = "l1",
) -> torch.Tensor:
    """SCA intra alignment: confidence-weighted distance of each feature to its (detached) prototype.

    ``distance="l2sq"`` is the paper's squared L2 (sum over dims); ``"l1"`` is the authors' code
    (``nn.L1Loss``: mean |f − P| over dims). Returns Σ_i w_i·ℓ_i / B (MMM scales the sum by 1/B).
    """
    diff = features - prototypes.detach()[labels]
    if distance == "l1":
        per = diff.abs().mean(dim=1)
    elif distance == "l2sq":
        per = diff.pow(2).sum(dim=1)
    else:
        raise ValueError(f"sca_intra: unknown distance {distance!r}; expected 'l1' or 'l2sq'")
    if weights is not None:
        per = per * weights
    return per.sum() / max(features.shape[0], 1)


def mmd_alignment(
    source: torch.Tensor,
    target: torch.Tensor,
    source_labels: torch.Tensor,
    target_labels: torch.Tensor,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
) -> torch.Tensor:
    """Mean over the identities present on both sides of MMD²(source_c, sg target_c), one mmd2 call.

    Identities missing on one side are skipped (not NaN); with none in common the loss is 0.
    """
    ids, inverse = torch.unique(torch.cat([source_labels, target_labels]), return_inverse=True)
    src_g, tgt_g = inverse[: source_labels.numel()], inverse[source_labels.numel() :]
    out = mmd2(source, target.detach(), src_g, tgt_g, ids.numel(), None, kernel_mul, kernel_num)
    valid = out.valid.to(out.values.dtype)
    return (out.values * valid).sum() / valid.sum().clamp_min(1)


def sca_inter(
    f_v1: torch.Tensor,
    f_v2: torch.Tensor,
    f_r: torch.Tensor,
    y_v: torch.Tensor,
    y_r: torch.Tensor,
) -> torch.Tensor:
    """MMM's inter alignment ("mutual distillation"): the RGB side
    [MMD(f_v1, sg f_r) + MMD(f_v2, sg f_r)] and the IR side [MMD(f_r, sg f_v1) + MMD(f_r, sg f_v2)],
    each averaged over the identities; returns their sum (MMM weights it by 0.05)."""
    rgb = mmd_alignment(f_v1, f_r, y_v, y_r) + mmd_alignment(f_v2, f_r, y_v, y_r)
    ir = mmd_alignment(f_r, f_v1, y_r, y_v) + mmd_alignment(f_r, f_v2, y_r, y_v)
    return rgb + ir


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Batch-hard triplet (MMM ``OriTripletLoss``): Euclidean distances, hardest positive and hardest
    negative per anchor, mean of max(0, d_ap − d_an + margin). Anchors without a negative are
    left out."""
    dist = torch.cdist(features, features).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
    ok = torch.isfinite(d_an)
    if not bool(ok.any()):
        return features.sum() * 0.0
    return F.relu(d_ap[ok] - d_an[ok] + margin).mean()


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MMM's ``sid`` loss: (1/B) Σ_i p_i · CE_i with per-sample confidences p."""
    return (weights * F.cross_entropy(logits, labels, reduction="none")).sum() / max(logits.shape[0], 1)
