"""Cluster and instance memories, the TSMem schedule and cross-modality memory aggregation
(``docs/methods.md``, ECUL). Memories are updated explicitly, after ``backward``, through the
``memory_update_`` op: no mutation is hidden inside autograd."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .losses import cluster_nce, instance_nce
from .ops.memory import memory_update_, segment_reduce

__all__ = [
    "ClusterMemory",
    "InstanceMemory",
    "TSMem",
    "cluster_memories",
    "cross_modality_aggregate",
    "joint_memory",
    "memory_from_state",
    "memory_momentum",
    "singleton_labels",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TSMem:
    """Two-step memory updating: replacement (momentum 0) before ``switch_epoch``, momentum after.

    The trainer asks ``schedule.momentum(epoch)`` once per epoch (ECUL's switch epoch is not
    published; 50 of 100 is our default, see docs/methods.md, ECUL)."""

    switch_epoch: int = 50
    momentum_after: float = 0.1
    momentum_before: float = 0.0

    def momentum(self, epoch: int) -> float:
        return self.momentum_before if epoch < self.switch_epoch else self.momentum_after

    def stage(self, epoch: int) -> str:
        return "replace" if epoch < self.switch_epoch else "momentum"


class ClusterMemory(torch.nn.Module):
    """One L2-normalised centroid per cluster; ClusterNCE (τ = 0.05) against all of them.

    ``loss = memory(x, labels)`` in the forward pass, then ``memory.update(x, labels, m)`` after
    ``backward`` (cluster-contrast's ``CM`` updates inside backward; we keep it explicit)."""

    features: torch.Tensor

    def __init__(self, num_clusters: int, dim: int, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = temp
        self.register_buffer("features", torch.zeros(num_clusters, dim))

    @classmethod
    def from_features(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        num_clusters: int | None = None,
        temp: float = 0.05,
        weights: torch.Tensor | None = None,
    ) -> ClusterMemory:
        """Normalised (optionally confidence-weighted) cluster means; label −1 rows are left out."""
        c = int(labels.max()) + 1 if num_clusters is None else num_clusters
        mem = cls(c, features.shape[1], temp).to(features.device, features.dtype)
        mode = "mean" if weights is None else "weighted_mean"
        mem.features.copy_(segment_reduce(features.detach(), labels, c, weights, mode, normalize=True))
        return mem

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cluster_nce(x, self.features, labels, self.temp)

    @torch.no_grad()
    def update(self, x: torch.Tensor, labels: torch.Tensor, momentum: float, hard: bool = False) -> None:
        """Momentum update in batch order (momentum 0 replaces; ``hard`` uses the hardest sample)."""
        memory_update_(self.features, F.normalize(x.detach(), dim=1), labels, momentum, hard)


def singleton_labels(pseudo: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cluster ids with every outlier (−1) given its own new label after the last cluster.

    Returns (labels [N], number of labels)."""
    out = pseudo.clone()
    noise = out < 0
    first = int(out.max()) + 1 if bool((~noise).any()) else 0
    out[noise] = torch.arange(first, first + int(noise.sum()), device=out.device, dtype=out.dtype)
    return out, first + int(noise.sum())


class InstanceMemory(torch.nn.Module):
    """One slot per training image, indexed by the dataset index (not by a position in a filtered
    pseudo-label list), with the cluster label of each slot; outliers carry singleton labels."""

    slots: torch.Tensor
    slot_labels: torch.Tensor

    def __init__(self, features: torch.Tensor, pseudo_labels: torch.Tensor, temp: float = 0.05) -> None:
        super().__init__()
        self.temp = temp
        self.register_buffer("slots", F.normalize(features.detach(), dim=1).clone())
        self.register_buffer(
            "slot_labels", torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        )
        self.num_labels = 0
        self.set_labels(pseudo_labels)

    def set_labels(self, pseudo_labels: torch.Tensor) -> None:
        """New pseudo-labels for all N images, in dataset order (−1 = outlier)."""
        if pseudo_labels.shape != (self.slots.shape[0],):
            raise ValueError(
                f"InstanceMemory: expected pseudo_labels of shape ({self.slots.shape[0]},) aligned with the "
                f"dataset, got {tuple(pseudo_labels.shape)}"
            )
        labels, self.num_labels = singleton_labels(pseudo_labels.to(self.slot_labels.device))
        self.slot_labels.copy_(labels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Instance NCE of a batch whose images have dataset indices ``indices``."""
        return instance_nce(
            x, self.slots, self.slot_labels, self.slot_labels[indices], self.num_labels, self.temp
        )

    @torch.no_grad()
    def update(self, x: torch.Tensor, indices: torch.Tensor, momentum: float = 0.0) -> None:
        """Slot update by dataset index; momentum 0 (MPJL) replaces a slot by its current feature."""
        memory_update_(self.slots, F.normalize(x.detach(), dim=1), indices, momentum)


def _pair_counts(
    feat_v: torch.Tensor,
    labels_v: torch.Tensor,
    feat_r: torch.Tensor,
    labels_r: torch.Tensor,
    num_v: int,
    num_r: int,
    threshold: float,
    k: int | None,
    block: int,
) -> torch.Tensor:
    """counts[a, b] = #(visible i in a, infrared j in b) with cos(i, j) ≥ threshold, blockwise over
    visible rows; with ``k`` only the k most similar infrared instances of each row are considered
    (torch.topk per row, never a sort of the whole N_v × N_r matrix)."""
    fv, fr = F.normalize(feat_v, dim=1), F.normalize(feat_r, dim=1)
    counts = torch.zeros(num_v * num_r, dtype=torch.long, device=feat_v.device)
    keep_r = labels_r >= 0
    fr, lr = fr[keep_r], labels_r[keep_r]
    if fr.shape[0] == 0:
        return counts.view(num_v, num_r)
    for start in range(0, fv.shape[0], block):
        lv = labels_v[start : start + block]
        rows = lv >= 0
        if not bool(rows.any()):
            continue
        sim = fv[start : start + block][rows] @ fr.t()
        lv = lv[rows]
        if k is not None and k < sim.shape[1]:
            val, col = torch.topk(sim, k, dim=1)
        else:
            val, col = sim, torch.arange(sim.shape[1], device=sim.device).expand_as(sim)
        hit = val >= threshold
        pair = lv[:, None].expand_as(col)[hit] * num_r + lr[col[hit]]
        counts += torch.bincount(pair, minlength=num_v * num_r)
    return counts.view(num_v, num_r)


@torch.no_grad()
def cross_modality_aggregate(
    feat_v: torch.Tensor,
    labels_v: torch.Tensor,
    feat_r: torch.Tensor,
    labels_r: torch.Tensor,
    memory_v: torch.Tensor,
    memory_r: torch.Tensor,
    threshold: float = 0.5,
    own_weight: float = 0.1,
    k: int | None = None,
    mix_infrared: bool = True,
    block: int = 4096,
) -> list[tuple[int, int, int]]:
    """ADCA-style cross-modality memory aggregation, in place on ``memory_v`` / ``memory_r``.

    Counts, per (visible cluster a, infrared cluster b), the cross-modality instance pairs with
    cosine ≥ ``threshold`` (noise −1 left out); visits pairs by count, descending (ties: lower a,
    then lower b), one-to-one greedily; matched rows become own_weight·own + (1−own_weight)·other
    (from the memories before aggregation). ``mix_infrared=False`` keeps infrared rows unchanged,
    which is what ADCA's code does (docs/methods.md, ECUL). ``k`` caps the pairs per visible instance to its
    top-k infrared neighbours; the default counts every pair above the threshold, blockwise.

    Returns the matched (a, b, count) triples in visiting order.
    """
    num_v, num_r = memory_v.shape[0], memory_r.shape[0]
    counts = _pair_counts(feat_v, labels_v, feat_r, labels_r, num_v, num_r, threshold, k, block).flatten()
    nz = counts.nonzero().flatten()
    order = nz[torch.sort(-counts[nz], stable=True).indices].tolist()  # only the non-zero pairs
    counts_host = counts.cpu()
    used_v, used_r = set(), set()
    matches: list[tuple[int, int, int]] = []
    for flat in order:
        a, b = divmod(flat, num_r)
        if a in used_v or b in used_r:
            continue
        used_v.add(a)
        used_r.add(b)
        matches.append((a, b, int(counts_host[flat])))
    if matches:
        a = torch.tensor([m[0] for m in matches], device=memory_v.device)
        b = torch.tensor([m[1] for m in matches], device=memory_r.device)
        old_v, old_r = memory_v[a].clone(), memory_r[b].clone()
        memory_v[a] = own_weight * old_v + (1 - own_weight) * old_r
        if mix_infrared:
            memory_r[b] = own_weight * old_r + (1 - own_weight) * old_v
    logger.info("cross-modality aggregation: %d matched cluster pairs", len(matches))
    return matches


# --------------------------------------------------------------------------------------------------
# Building an epoch's memories


def memory_momentum(momentum: float, tsmem_switch: int | None, epoch: int) -> float:
    """The cluster memories' momentum at ``epoch``: ``momentum`` throughout, or TSMem's schedule
    (replacement before ``tsmem_switch``, ``momentum`` from it on)."""
    if tsmem_switch is None:
        return momentum
    return TSMem(tsmem_switch, momentum).momentum(epoch)


@torch.no_grad()
def cluster_memories(
    features: torch.Tensor, labels: torch.Tensor, masks: dict[str, torch.Tensor], shared: bool, temp: float
) -> dict[str, ClusterMemory]:
    """One cluster memory per modality (``masks``: name → [N] bool over ``features``): the normalised means
    of its clusters. With ``shared`` labels (MMLM) both memories span the same ids 0..max."""
    c_shared = int(labels.max()) + 1 if shared else None
    out = {}
    for name, m in masks.items():
        lab = labels[m]
        c = c_shared if c_shared is not None else int(lab.max()) + 1
        out[name] = ClusterMemory.from_features(features[m], lab, c, temp)
    return out


@torch.no_grad()
def joint_memory(
    features: torch.Tensor, joint: torch.Tensor, masks: dict[str, torch.Tensor], temp: float
) -> ClusterMemory:
    """Joint memory: per joint cluster the normalised mean of its per-modality normalised means (a
    cluster present in one modality only takes that modality's mean)."""
    c = int(joint.max()) + 1
    means = [segment_reduce(features[m], joint[m], c, None, "mean", normalize=True) for m in masks.values()]
    has = [torch.bincount(joint[m][joint[m] >= 0], minlength=c)[:, None] > 0 for m in masks.values()]
    both = (means[0] * has[0] + means[1] * has[1]) / (has[0].float() + has[1].float()).clamp(min=1)
    mem = ClusterMemory(c, features.shape[1], temp).to(features.device)
    mem.features.copy_(F.normalize(both, dim=1))
    return mem


def memory_from_state(kind: str, state: dict, temp: float) -> torch.nn.Module:
    """A memory of class name ``kind`` ("ClusterMemory" / "InstanceMemory") restored from its state dict."""
    if kind == "ClusterMemory":
        m: torch.nn.Module = ClusterMemory(*state["features"].shape, temp)
    elif kind == "InstanceMemory":
        m = InstanceMemory(state["slots"], torch.full((state["slots"].shape[0],), -1), temp)
    else:
        raise ValueError(f"memory_from_state: unknown memory kind {kind!r}; expected ClusterMemory or InstanceMemory")
    m.load_state_dict(state)
    return m
