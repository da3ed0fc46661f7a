"""Batch-hard triplet on the pooled features (MMM's OriTripletLoss)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import batch_hard_triplet
from .base import Batch, EpochState, Objective


class Triplet(Objective):
    """Loss ``triplet`` (times ``weight``) over the whole batch; with separate label spaces the infrared
    ids are shifted after the visible ones, so ids of different modalities never match."""

    name = "triplet"

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.offset_r = 0

    def build(self, state: EpochState) -> dict:
        self.offset_r = int(state.labels.intra.max()) + 1
        return {}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        yr = batch.yr if batch.labels.shared else batch.yr + self.offset_r
        return {"triplet": self.weight * batch_hard_triplet(batch.pooled, torch.cat([batch.yv2, yr]))}
