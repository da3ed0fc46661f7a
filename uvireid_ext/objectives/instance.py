"""Instance memories (MPJL's hybrid memory): one slot per training image and modality, instance NCE."""

from __future__ import annotations

import torch
from torch import Tensor

from ..memory import InstanceMemory
from .base import Batch, EpochState, Objective, Step


class Instance(Objective):
    """Builds ``visible_instance`` / ``infrared_instance`` (slots = this epoch's features, labels = its
    pseudo-labels, outliers as singletons); loss ``ins_visible`` + ``ins_infrared``, times ``weight``;
    slots replaced by the batch's features (momentum 0)."""

    name = "instance"

    def __init__(self, temp: float, weight: float) -> None:
        self.temp, self.weight = temp, weight
        self.memories = torch.nn.ModuleDict()

    def build(self, state: EpochState) -> dict:
        for name, m in state.masks.items():
            state.memories[f"{name}_instance"] = InstanceMemory(state.features[m], state.labels.intra[m], self.temp)
        self.memories = state.memories
        return {}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        pos_v2 = torch.cat([batch.pos_v, batch.pos_v])
        return {"ins_visible": self.weight * self.memories["visible_instance"](batch.bn_v, pos_v2),
                "ins_infrared": self.weight * self.memories["infrared_instance"](batch.bn_r, batch.pos_r)}

    @torch.no_grad()
    def update(self, step: Step) -> None:
        f, pos = step.features, step.positions
        self.memories["visible_instance"].update(f[step.visible], pos[step.visible], 0.0)
        self.memories["infrared_instance"].update(f[step.infrared], pos[step.infrared], 0.0)
