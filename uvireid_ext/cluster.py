"""Features (+ modality and camera ids) → the pseudo-labels a recipe needs: visible, infrared, joint.

Each set is clustered by DBSCAN on the sparse Jaccard graph (``jaccard_distance(..., max_distance=eps)``:
only pairs with d <= eps are ever built), with the expansion each recipe uses:

* ``baseline`` / ``mmm`` (MMM ``Baseline.py``): per modality plain k-reciprocal encoding k1=30, k2=6;
  joint modality-balanced expansion k1=40, k2=32 (SYSU-MM01) or k1=38, k2=18 (RegDB).
* ``ecul``: EMCC, our reading of ECUL (``docs/methods.md``, clustering settings, **inferred** from MPJL): per
  modality camera-capped expansion (k2=6 per camera from a pool of k3=12); joint (modality, camera)
  capped expansion (k2=16 per group from a pool of k3=k1).

eps 0.6 on SYSU-MM01, 0.3 on RegDB; min_samples 4. Joint instance selection (keep only joint clusters
that hold both modalities; the others become -1) is on by default, as MMM's joint loaders and ECUL's
inter-modality instance selection do; pass ``select_joint=False`` to keep every joint cluster.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .metrics import ari, majority_identity, match_precision
from .modality import Modality
from .ops import finite_rows
from .ops.cluster import dbscan
from .ops.distance import jaccard_distance

__all__ = [
    "CONFIGS",
    "ClusterConfig",
    "JaccardConfig",
    "Labels",
    "PseudoLabels",
    "label_stats",
    "oracle_labels",
    "pseudo_labels",
    "recipe_labels",
    "select_cross_modality",
]


@dataclass(frozen=True)
class JaccardConfig:
    """Arguments of ``uvireid_ext.jaccard_distance`` for one clustering."""

    k1: int
    k2: int
    expansion: Literal["plain", "modality", "emcc"] = "plain"
    k3: int | None = None


@dataclass(frozen=True)
class ClusterConfig:
    intra: JaccardConfig  # visible and infrared, each on its own
    joint: JaccardConfig  # visible + infrared together
    eps: float
    min_samples: int = 4
    select_joint: bool = True


_PLAIN = JaccardConfig(30, 6)
CONFIGS: dict[tuple[str, str], ClusterConfig] = {
    ("baseline", "sysu"): ClusterConfig(_PLAIN, JaccardConfig(40, 32, "modality"), eps=0.6),
    ("baseline", "regdb"): ClusterConfig(_PLAIN, JaccardConfig(38, 18, "modality"), eps=0.3),
    ("ecul", "sysu"): ClusterConfig(
        JaccardConfig(30, 6, "emcc", 12), JaccardConfig(40, 16, "emcc", 40), eps=0.6
    ),
    ("ecul", "regdb"): ClusterConfig(
        JaccardConfig(30, 6, "emcc", 12), JaccardConfig(38, 16, "emcc", 38), eps=0.3
    ),
}
CONFIGS[("mmm", "sysu")] = CONFIGS[("baseline", "sysu")]  # MMM's labels come from its Baseline
CONFIGS[("mmm", "regdb")] = CONFIGS[("baseline", "regdb")]


@dataclass
class PseudoLabels:
    """Labels are int64, -1 = outlier, ids 0..C-1 by first appearance within each set."""

    visible: Tensor  # [Nv], for features[visible_index]
    infrared: Tensor  # [Nr], for features[infrared_index]
    joint: Tensor | None  # [N], for all features (None when not asked for)
    visible_index: Tensor
    infrared_index: Tensor


def _jaccard_distance(
    features: Tensor, cfg: JaccardConfig, modality: Tensor | None, camera: Tensor | None, eps: float
) -> Tensor:
    return jaccard_distance(
        features,
        cfg.k1,
        cfg.k2,
        modality=modality,
        camera=camera,
        expansion=cfg.expansion,
        k3=cfg.k3,
        max_distance=eps,
    )


def _cluster(
    features: Tensor,
    cfg: JaccardConfig,
    modality: Tensor | None,
    camera: Tensor | None,
    eps: float,
    min_samples: int,
    what: str,
) -> Tensor:
    n = features.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=features.device)
    if cfg.k1 >= n:
        raise ValueError(f"cluster: {what} set has {n} samples, too few for k1={cfg.k1}")
    labels = dbscan(_jaccard_distance(features, cfg, modality, camera, eps), eps, min_samples)
    if not bool((labels >= 0).any()):
        warnings.warn(
            f"cluster: DBSCAN found no cluster in the {what} set (N={n}, eps={eps}, "
            f"min_samples={min_samples}); all its labels are -1",
            stacklevel=3,
        )
    return labels


def select_cross_modality(labels: Tensor, modality: Tensor) -> Tensor:
    """Joint instance selection: clusters without both modalities become -1; ids renumbered 0..C'-1
    by first appearance."""
    if labels.shape != modality.shape:
        raise ValueError(
            f"select_cross_modality: labels {tuple(labels.shape)} vs modality {tuple(modality.shape)}"
        )
    out = labels.clone()
    if labels.numel() == 0 or int(labels.max()) < 0:
        return out
    c = int(labels.max()) + 1
    keep = labels >= 0
    has = torch.zeros(c, 2, dtype=torch.bool, device=labels.device)
    has[labels[keep], modality[keep].long()] = True
    both = has.all(1)
    out[keep & ~both[labels.clamp(min=0)]] = -1
    kept = out >= 0
    # Renumber by first appearance: the first index of each surviving id, ranked.
    first = torch.full((c,), labels.numel(), dtype=torch.int64, device=labels.device)
    idx = torch.arange(labels.numel(), device=labels.device)
    first.scatter_reduce_(0, out[kept], idx[kept], reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(c, device=labels.device)
    out[kept] = rank[out[kept]]
    return out


def _check_ids(name: str, ids: Tensor | None, features: Tensor) -> None:
    if ids is None:
        return
    if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.shape[0] != features.shape[0]:
        raise ValueError(
            f"cluster: expected {name} of shape [{features.shape[0]}], got {tuple(getattr(ids, 'shape', ()))}"
        )
    if ids.device != features.device:
        raise ValueError(f"cluster: {name} on {ids.device} but features on {features.device}")
    if ids.is_floating_point():
        raise ValueError(f"cluster: expected integer {name}, got dtype {ids.dtype}")


def pseudo_labels(
    features: Tensor,
    modality: Tensor,
    camera: Tensor | None = None,
    *,
    recipe: str = "baseline",
    dataset: str = "sysu",
    config: ClusterConfig | None = None,
    joint: bool = True,
    select_joint: bool | None = None,
) -> PseudoLabels:
    """Pseudo-labels of one epoch.

    Args:
        features: [N, D] float features of all training images (both modalities).
        modality: [N] integer ``Modality`` values (0 = visible, 1 = infrared).
        camera: [N] integer camera ids (needed by EMCC; ignored by the plain expansion).
        recipe, dataset: pick the configuration from ``CONFIGS`` (``config`` overrides it).
        joint: also cluster visible + infrared together.
        select_joint: override the configuration's joint instance selection.
    """
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ValueError(f"cluster: expected features [N, D], got {tuple(getattr(features, 'shape', ()))}")
    _check_ids("modality", modality, features)
    _check_ids("camera", camera, features)
    if modality.numel() and not bool(((modality == Modality.VISIBLE) | (modality == Modality.INFRARED)).all()):
        raise ValueError(
            f"cluster: modality must hold 0 (visible) or 1 (infrared), got {modality.unique().tolist()}"
        )
    if config is None:
        if (recipe, dataset) not in CONFIGS:
            raise ValueError(
                f"cluster: no configuration for recipe={recipe!r}, dataset={dataset!r}; "
                f"known: {sorted(CONFIGS)}"
            )
        config = CONFIGS[(recipe, dataset)]
    if select_joint is not None:
        config = dataclasses.replace(config, select_joint=select_joint)
    features = features.float().contiguous()
    finite_rows("cluster", "features", features)  # here, so that the row is the caller's, not a subset's
    vi = (modality == Modality.VISIBLE).nonzero().flatten()
    ri = (modality == Modality.INFRARED).nonzero().flatten()
    out = []
    for name, idx in (("visible", vi), ("infrared", ri)):
        cam = camera[idx] if camera is not None else None
        out.append(_cluster(features[idx], config.intra, None, cam, config.eps, config.min_samples, name))
    joint_labels = None
    if joint:
        joint_labels = _cluster(
            features, config.joint, modality, camera, config.eps, config.min_samples, "joint"
        )
        if config.select_joint:
            joint_labels = select_cross_modality(joint_labels, modality)
    return PseudoLabels(out[0], out[1], joint_labels, vi, ri)


# --------------------------------------------------------------------------------------------------
# The label stage of one training epoch: the recipe's pseudo-labels (MMLM transfer included), or the
# ground truth (oracle), and their cluster counts and ARI.


@dataclass
class Labels:
    """One epoch's pseudo-labels, all [N] over the training set (−1 = outlier / unused)."""

    intra: Tensor  # visible and infrared ids in their own label spaces (MMLM: one shared space)
    joint: Tensor | None
    shared: bool  # True when visible and infrared ids name the same identities (MMLM)


def oracle_labels(pid: Tensor, device: torch.device) -> Labels:
    """Ground-truth identities (0..C-1) as intra and joint labels, shared across modalities."""
    if not bool((pid >= 0).all()):
        raise ValueError("train: oracle_labels needs ground-truth identities for every image")
    gt = torch.unique(pid, return_inverse=True)[1].to(device)
    return Labels(gt, gt.clone(), True)


def recipe_labels(
    features: Tensor,
    modality: Tensor,
    camera: Tensor,
    pid: Tensor,
    config: ClusterConfig,
    *,
    joint: bool,
    select_joint: bool,
    mmlm_method: str | None,
    seed: int,
) -> tuple[Labels, dict]:
    """Clustering (:func:`pseudo_labels`), then, with ``mmlm_method``, MMLM's transfer of the infrared
    labels onto the matched visible clusters. Returns the labels and log entries (DBSCAN warnings, and
    the visible clustering's own ARI before the transfer when the ground truth is known)."""
    n = features.shape[0]
    info: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl = pseudo_labels(features, modality, camera, config=config, joint=joint, select_joint=select_joint)
    info["warnings"] = [str(w.message) for w in caught]
    intra = torch.full((n,), -1, dtype=torch.int64, device=features.device)
    lv, lr = pl.visible, pl.infrared
    shared = False
    if mmlm_method is not None and bool((lv >= 0).any()) and bool((lr >= 0).any()):
        from .matching import mmlm

        res = mmlm(features[pl.visible_index], lv, features[pl.infrared_index], lr, method=mmlm_method, seed=seed)
        lv, shared = res.vis_labels, True
        if bool((pid >= 0).all()):  # how often a visible cluster is given the right infrared cluster
            pairs = torch.stack([torch.arange(res.match.numel()), res.match.cpu()], 1)[res.match.cpu() >= 0]
            info["mmlm_pairs"] = int(pairs.shape[0])
            info["mmlm_precision"] = match_precision(
                pairs, majority_identity(pl.visible, pid[pl.visible_index.cpu()], res.match.numel()),
                majority_identity(pl.infrared, pid[pl.infrared_index.cpu()], res.cost.shape[1]))
    if shared and bool((pid >= 0).all()):  # the clustering's own quality, before the transfer
        info["ari_visible_clustering"] = ari(pl.visible, pid[pl.visible_index.cpu()])
    intra[pl.visible_index], intra[pl.infrared_index] = lv, lr
    return Labels(intra, pl.joint, shared), info


def label_stats(labels: Labels, modality: Tensor, pid: Tensor, info: dict) -> dict:
    """Cluster and outlier counts per modality and, where the ground truth ``pid`` is known, the ARI of
    each label set; added to ``info`` (whose ``ari_visible_clustering``, when present, becomes the
    visible score, the transferred labels' one ``visible_after_mmlm``)."""
    intra = labels.intra
    sets = {"visible": modality == Modality.VISIBLE, "infrared": modality == Modality.INFRARED}
    for name, m in sets.items():
        lab = intra[m]
        info[f"clusters_{name}"] = int(lab[lab >= 0].unique().numel())  # after MMLM ids are not 0..C-1
        info[f"outliers_{name}"] = int((lab < 0).sum())
    if labels.joint is not None:
        info["clusters_joint"] = int(labels.joint.unique().ge(0).sum())
    if bool((pid >= 0).all()):
        scores = {}
        for name, m in sets.items():
            scores[name] = ari(intra[m], pid[m])
        if "ari_visible_clustering" in info:
            scores["visible_after_mmlm"] = scores["visible"]
            scores["visible"] = info.pop("ari_visible_clustering")
        if labels.shared:
            scores["cross_modality"] = ari(intra, pid)
        if labels.joint is not None:
            scores["joint"] = ari(labels.joint, pid)
            info.update(joint_cross_stats(labels.joint, sets["visible"], pid))
        info["ari"] = scores
    return info


def joint_cross_stats(joint: Tensor, visible: Tensor, pid: Tensor) -> dict:
    """The joint clusters holding both modalities (``clusters_joint_cross``) and the share of them whose
    visible and infrared members' majority identities agree (``joint_cross_precision``, NaN for none)."""
    joint, visible, pid = joint.cpu(), visible.cpu(), pid.cpu()
    c = int(joint.max()) + 1 if joint.numel() else 0
    major_v = majority_identity(torch.where(visible, joint, -1), pid, c)
    major_r = majority_identity(torch.where(visible, -1, joint), pid, c)
    both = torch.nonzero((major_v >= 0) & (major_r >= 0)).flatten()
    return {"clusters_joint_cross": int(both.numel()),
            "joint_cross_precision": match_precision(torch.stack([both, both], 1), major_v, major_r)}
