"""ClusterNCE on the visible and infrared cluster memories (cluster-contrast's CMC)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..memory import cluster_memories
from .base import Batch, EpochState, Objective, Step


class ClusterNCE(Objective):
    """Builds the ``visible`` / ``infrared`` cluster memories each epoch; loss ``nce_visible`` (both
    visible views) + ``nce_infrared``; momentum update with the batch's labels."""

    name = "cluster_nce"

    def __init__(self, temp: float) -> None:
        self.temp = temp
        self.memories = torch.nn.ModuleDict()

    def build(self, state: EpochState) -> dict:
        for name, mem in cluster_memories(state.features, state.labels.intra, state.masks, state.labels.shared,
                                          self.temp).items():
            state.memories[name] = mem
        self.memories = state.memories
        return {}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        return {"nce_visible": self.memories["visible"](batch.bn_v, batch.yv2),
                "nce_infrared": self.memories["infrared"](batch.bn_r, batch.yr)}

    @torch.no_grad()
    def update(self, step: Step) -> None:
        f, lab = step.features, step.labels
        self.memories["visible"].update(f[step.visible], lab[step.visible], step.momentum)
        self.memories["infrared"].update(f[step.infrared], lab[step.infrared], step.momentum)
