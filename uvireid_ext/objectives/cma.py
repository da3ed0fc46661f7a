"""Cross-modality memory aggregation (ADCA-style, used by ECUL): matched visible / infrared cluster
memories mixed in place, from ``start`` on, when the two label spaces are separate."""

from __future__ import annotations

import torch

from ..memory import cross_modality_aggregate
from ..metrics import majority_identity, match_precision
from .base import EpochState, Objective


class CrossModalityAggregation(Objective):
    """Build only: runs after the cluster memories (and SCA, which reads them unmixed) are built."""

    name = "cma"

    def __init__(self, start: int) -> None:
        self.start = start

    def build(self, state: EpochState) -> dict:
        if state.epoch < self.start or state.labels.shared:
            return {}
        mv, mr = state.masks["visible"], state.masks["infrared"]
        f, lab = state.features, state.labels.intra
        matches = cross_modality_aggregate(f[mv], lab[mv], f[mr], lab[mr], state.memories["visible"].features,
                                           state.memories["infrared"].features)
        info: dict = {"cma_pairs": len(matches)}
        if state.pid is not None:  # how often a matched pair is one identity
            nv, nr = state.memories["visible"].features.shape[0], state.memories["infrared"].features.shape[0]
            pairs = torch.tensor([(a, b) for a, b, _ in matches], dtype=torch.int64).view(-1, 2)
            info["cma_precision"] = match_precision(pairs, majority_identity(lab[mv], state.pid[mv], nv),
                                                    majority_identity(lab[mr], state.pid[mr], nr))
        return info
