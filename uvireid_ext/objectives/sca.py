"""MMM's semantic-consistent alignment (SCA): GMM confidences of the pseudo-labels, intra alignment of the
pooled features to confidence-weighted prototypes, inter alignment (MMD²) across modalities."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..confidence import gmm_confidence
from ..losses import sca_inter, sca_intra
from ..ops.memory import segment_reduce
from .base import Batch, EpochState, Objective


class SCA(Objective):
    """Build (after the cluster memories, before any aggregation changes them): per modality the GMM
    confidence of each image's ClusterNCE loss, and prototypes fixed for the epoch: confidence-weighted
    sums of the pooled features divided by the count (MMM's code, so low-confidence identities shrink
    toward 0). Loss: ``sca_intra`` (both modalities) and, with shared labels, ``sca_inter``."""

    name = "sca"
    needs_pooled = True

    def __init__(self, temp: float, distance: Literal["l1", "l2sq"], intra_weight: float, inter_weight: float,
                 seed: int) -> None:
        self.temp, self.distance, self.seed = temp, distance, seed
        self.intra_weight, self.inter_weight = intra_weight, inter_weight
        self.confidence: Tensor | None = None
        self.prototypes: dict[str, Tensor] = {}

    @torch.no_grad()
    def build(self, state: EpochState) -> dict:
        labels, feats, mems = state.labels, state.features, state.memories
        if state.pooled is None:
            raise ValueError("sca: the epoch state has no pooled features")
        conf = torch.ones(feats.shape[0], device=feats.device)
        self.prototypes = {}
        for name, m in state.masks.items():
            lab = labels.intra[m]
            ok = lab >= 0
            loss = F.cross_entropy(F.normalize(feats[m][ok], dim=1) @ mems[name].features.t() / self.temp,
                                   lab[ok], reduction="none")
            if loss.numel() >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    part = gmm_confidence(loss, seed=self.seed)
                sub = conf[m]
                sub[ok] = part
                conf[m] = sub
            self.prototypes[name] = segment_reduce(state.pooled[m], lab, mems[name].features.shape[0], conf[m],
                                                   "weighted_sum_by_count", normalize=False)
        self.confidence = conf
        used = labels.intra >= 0
        return {"confidence_mean": float(conf[used].mean()) if bool(used.any()) else 0.0}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        if self.confidence is None:
            return {}
        v, nv, pooled = 2 * batch.nv, batch.nv, batch.pooled
        conf = self.confidence[batch.index]
        intra_v = sca_intra(pooled[:v], self.prototypes["visible"], batch.yv2, conf[:v], self.distance)
        intra_r = sca_intra(pooled[v:], self.prototypes["infrared"], batch.yr, conf[v:], self.distance)
        terms = {"sca_intra": self.intra_weight * (intra_v + intra_r)}
        if batch.labels.shared:
            terms["sca_inter"] = self.inter_weight * sca_inter(pooled[:nv], pooled[nv:v], pooled[v:], batch.yv,
                                                               batch.yr)
        return terms

    def shared_tensors(self) -> list[Tensor]:
        return [*self.prototypes.values(), *([self.confidence] if self.confidence is not None else [])]
