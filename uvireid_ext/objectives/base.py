"""What the training loop hands the objectives, and the hooks an objective implements."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..cluster import Labels

__all__ = ["Batch", "EpochState", "Objective", "Step"]


@dataclass
class EpochState:
    """One epoch's inputs to the build hooks. ``memories`` is the run's memory registry (checkpointed
    with the run): build hooks add theirs under fixed names, in objective order."""

    epoch: int
    features: Tensor  # [N, D] flip-averaged BN features of the training set
    pooled: Tensor | None  # [N, D'] GeM-pooled features (only when an objective asks for them)
    labels: Labels
    masks: dict[str, Tensor]  # "visible" / "infrared" → [N] bool over the training set
    memories: torch.nn.ModuleDict
    momentum: float  # the cluster memories' momentum this epoch (TSMem or constant)
    pid: Tensor | None = None  # [N] ground-truth identities when known: diagnostics in the log only


@dataclass
class Batch:
    """One iteration's forward outputs: 2·nv visible rows (two views of the same images), then nr
    infrared rows."""

    bn: Tensor  # [2·nv + nr, D] BN-neck features
    pooled: Tensor  # [2·nv + nr, D'] GeM-pooled features
    nv: int
    yv: Tensor  # [nv] labels of the sampled visible images
    yr: Tensor  # [nr] labels of the sampled infrared images
    pos_v: Tensor  # [nv] positions of the visible images among the visible ones (instance slots)
    pos_r: Tensor  # [nr]
    index: Tensor  # [2·nv + nr] dataset indices of the rows
    labels: Labels

    def __post_init__(self) -> None:
        # The per-modality views are taken once and shared by every objective: their gradients then meet
        # in one view before reaching ``bn``, which keeps the backward's summation order fixed.
        self.bn_v, self.bn_r = self.bn[: 2 * self.nv], self.bn[2 * self.nv :]
        self.yv2 = torch.cat([self.yv, self.yv])


@dataclass
class Step:
    """One rank's share of an all-gathered batch, for the memory updates after the optimiser step."""

    features: Tensor  # [2·nv + nr, D] detached BN features
    labels: Tensor  # [2·nv + nr] intra labels
    positions: Tensor  # [2·nv + nr] positions within the modality
    index: Tensor  # [2·nv + nr] dataset indices
    visible: slice
    infrared: slice
    momentum: float


class Objective:
    """A recipe feature: ``build`` once per epoch (memories, statistics; returns log entries), ``loss``
    per batch (named, weighted terms), ``update`` after every optimiser step (memory updates)."""

    name: str = ""
    needs_pooled = False  # build wants the pooled features of the training set

    def build(self, state: EpochState) -> dict:
        return {}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        return {}

    @torch.no_grad()
    def update(self, step: Step) -> None:
        return None

    def shared_tensors(self) -> list[Tensor]:
        """Tensors built on every rank that must equal rank 0's (broadcast after the build)."""
        return []
