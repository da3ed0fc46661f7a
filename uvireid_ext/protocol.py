"""The test protocol of an in-memory eval set (SYSU-MM01 trials / RegDB), used by the trainer, the CLI's
``eval``, the demo and the tests; the metrics themselves are ``uvireid_ext.evaluate``'s."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.sets import EvalSet
from .evaluate import EvalResult, average_trials, eval_regdb, eval_sysu, pairwise_distance
from .modality import Modality

__all__ = ["evaluate_on"]


def evaluate_on(es: EvalSet, extract: Callable[[Tensor, Tensor], Tensor]) -> dict:
    """SYSU / RegDB metrics over the eval set's trials; ``extract(images, is_ir)`` gives test features,
    L2-normalised here. Returns R1/R5/R10/mAP/mINP and the mean CMC."""
    def feats(images: Tensor, ir: bool) -> Tensor:
        return F.normalize(extract(images, torch.full((len(images),), ir)), dim=1)

    query_ir = es.q_modality == Modality.INFRARED
    qf = feats(es.query, query_ir)
    results: list[EvalResult] = []
    for g_img, g_pid, g_cam in es.galleries:
        dm = pairwise_distance(qf, feats(g_img, not query_ir)).cpu()
        if es.dataset == "sysu":
            results.append(eval_sysu(dm, es.q_pid, g_pid, es.q_cam, g_cam))
        else:
            results.append(eval_regdb(dm, es.q_pid, g_pid))
    mean = average_trials(results)
    cmc = mean.cmc.tolist()
    return {"R1": cmc[0], "R5": cmc[min(4, len(cmc) - 1)], "R10": cmc[min(9, len(cmc) - 1)],
            "mAP": mean.mAP, "mINP": mean.mINP, "cmc": cmc}
