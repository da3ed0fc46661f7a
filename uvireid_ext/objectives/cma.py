"""Cross-modality memory aggregation (ADCA-style, used by ECUL): matched visible / infrared cluster
memories mixed in place, from ``start`` on, when the two label spaces are separate."""

from __future__ import annotations

from ..memory import cross_modality_aggregate
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
        return {"cma_pairs": len(matches)}
