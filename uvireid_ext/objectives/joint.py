"""The joint (visible + infrared) objective: ClusterNCE on the joint clusters' memory, plus, with
instance memories on, an instance NCE over every training image under its joint label."""

from __future__ import annotations

import torch
from torch import Tensor

from ..memory import InstanceMemory, joint_memory
from .base import Batch, EpochState, Objective, Step


class Joint(Objective):
    """Active in the epochs whose label stage produced joint labels with at least one cluster. Builds
    ``joint`` (and ``joint_instance``); loss ``nce_joint`` (and ``ins_joint``), times ``weight``, over the
    batch rows in a joint cluster; momentum update of the joint memory, slot replacement."""

    name = "joint"

    def __init__(self, temp: float, weight: float, instance: bool) -> None:
        self.temp, self.weight, self.instance = temp, weight, instance
        self.memories = torch.nn.ModuleDict()
        self.labels: Tensor | None = None  # this epoch's joint labels [N]; None: inactive

    def build(self, state: EpochState) -> dict:
        jl = state.labels.joint
        self.labels = None
        self.memories = state.memories
        if jl is None or not bool((jl >= 0).any()):
            return {}
        self.labels = jl
        state.memories["joint"] = joint_memory(state.features, jl, state.masks, self.temp)
        if self.instance:
            state.memories["joint_instance"] = InstanceMemory(state.features, jl, self.temp)
        return {}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        if self.labels is None:
            return {}
        jl = self.labels[batch.index]
        ok = jl >= 0
        if not bool(ok.any()):
            return {}
        terms = {"nce_joint": self.weight * self.memories["joint"](batch.bn[ok], jl[ok])}
        if self.instance:
            terms["ins_joint"] = self.weight * self.memories["joint_instance"](batch.bn[ok], batch.index[ok])
        return terms

    @torch.no_grad()
    def update(self, step: Step) -> None:
        if self.labels is None:
            return
        jl = self.labels[step.index]
        ok = jl >= 0
        self.memories["joint"].update(step.features[ok], jl[ok], step.momentum)
        if self.instance:
            self.memories["joint_instance"].update(step.features[ok], step.index[ok], 0.0)
