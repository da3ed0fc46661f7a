"""Batch samplers over pseudo-labelled identities (``docs/methods.md``, shared parts and MMM).

:class:`IdentitySampler`: P identities × K images, cluster-contrast's ``RandomMultipleGallerySampler``
rule: per identity one random anchor, then K−1 more drawn preferably from the identity's *other*
cameras (without replacement while enough exist, with replacement when too few), else from the anchor's
camera. :func:`paired_batch` draws the same P identities in two modalities (MMM's joint batches).
All draws come from a NumPy ``Generator`` owned by the caller, so a checkpoint can store its state.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["IdentitySampler", "paired_batch"]


class IdentitySampler:
    """Indices of P × K images of labelled samples (label −1 is never drawn).

    labels, cameras: [N] integer arrays (tensors or NumPy); returned indices are positions into them.
    """

    def __init__(self, labels: np.ndarray | torch.Tensor, cameras: np.ndarray | torch.Tensor) -> None:
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        cam = np.asarray(cameras.cpu() if isinstance(cameras, torch.Tensor) else cameras, dtype=np.int64)
        if lab.shape != cam.shape or lab.ndim != 1:
            raise ValueError(f"IdentitySampler: labels {lab.shape} and cameras {cam.shape} must be equal 1-D")
        keep = np.flatnonzero(lab >= 0)
        order = keep[np.argsort(lab[keep], kind="stable")]
        ids, starts = np.unique(lab[order], return_index=True)
        self.ids = ids
        self.members = np.split(order, starts[1:]) if ids.size else []
        self.cameras = cam

    def __len__(self) -> int:
        return int(self.ids.size)

    def draw_id(self, member: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        anchor = member[rng.integers(member.size)]
        cams = self.cameras[member]
        others = member[cams != self.cameras[anchor]]
        pool = others if others.size else member[member != anchor]
        if pool.size == 0:
            pool = member
        pick = rng.choice(pool, size=k - 1, replace=pool.size < k - 1)
        return np.concatenate([[anchor], pick])

    def batch(self, p: int, k: int, rng: np.random.Generator, ids: np.ndarray | None = None) -> np.ndarray:
        """P identities (without replacement while enough exist) × K indices; ``ids`` forces the identities."""
        if len(self) == 0:
            raise ValueError("IdentitySampler: no labelled sample to draw from")
        if ids is None:
            pos = rng.choice(len(self), size=p, replace=len(self) < p)
        else:
            pos = np.searchsorted(self.ids, ids)
        return np.concatenate([self.draw_id(self.members[i], k, rng) for i in pos])


def paired_batch(
    first: IdentitySampler, second: IdentitySampler, p: int, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """P identities present in both samplers (one label space), K images of each in each modality."""
    common = np.intersect1d(first.ids, second.ids)
    if common.size == 0:
        raise ValueError("paired_batch: no identity has samples in both modalities")
    ids = rng.choice(common, size=p, replace=common.size < p)
    return first.batch(p, k, rng, ids), second.batch(p, k, rng, ids)
