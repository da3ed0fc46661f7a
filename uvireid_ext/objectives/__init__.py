"""Recipe features as objectives (see :class:`Objective` for the hooks the training loop calls).

A recipe lists the objectives it uses (``recipe.objectives``); the loop runs them in the fixed order of
``OBJECTIVES`` whatever the order of the list, so a preset and a user's file with the same set give the
same run: the build hooks depend on that order (SCA reads the cluster memories before aggregation mixes
them) and so does the floating-point sum of the loss terms.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from .base import Batch, EpochState, Objective, Step
from .cluster_nce import ClusterNCE
from .cma import CrossModalityAggregation
from .instance import Instance
from .joint import Joint
from .sca import SCA
from .triplet import Triplet

__all__ = [
    "OBJECTIVES",
    "SCA",
    "Batch",
    "ClusterNCE",
    "CrossModalityAggregation",
    "EpochState",
    "Instance",
    "Joint",
    "Objective",
    "Step",
    "Triplet",
    "build_objectives",
]

# name → factory from the run's configuration, in the loop's order.
OBJECTIVES: dict[str, Callable[[Config], Objective]] = {
    "cluster_nce": lambda c: ClusterNCE(c.recipe.temp),
    "instance": lambda c: Instance(c.recipe.temp, c.recipe.instance_weight),
    "joint": lambda c: Joint(c.recipe.temp, c.recipe.joint_weight, "instance" in c.recipe.objectives),
    "sca": lambda c: SCA(c.recipe.temp, c.recipe.sca_distance, c.recipe.sca_intra_weight, c.recipe.sca_inter_weight,
                         c.run.seed),
    "cma": lambda c: CrossModalityAggregation(c.recipe.cma_start),
    "triplet": lambda c: Triplet(c.recipe.triplet_weight),
}


def build_objectives(cfg: Config) -> list[Objective]:
    """The objectives of ``cfg.recipe.objectives``, in the order of ``OBJECTIVES``."""
    unknown = [n for n in cfg.recipe.objectives if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"train: unknown objective(s) {unknown}; known: {', '.join(OBJECTIVES)}")
    return [make(cfg) for name, make in OBJECTIVES.items() if name in cfg.recipe.objectives]
