"""The test protocols: one runner over an in-memory eval set (SYSU-MM01 trials / RegDB), used by the
trainer, the CLI's ``eval``, the demo and the tests, and the public ``evaluate_sysu`` / ``evaluate_regdb``
for any model with the standard interface, built on it. The metrics are ``uvireid_ext.evaluate``'s
(``docs/protocols.md``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import IMG_HEIGHT, IMG_WIDTH
from .data.sets import EvalSet, load_eval_set
from .evaluate import EvalResult, average_trials, eval_regdb, eval_sysu, pairwise_distance
from .features import extract_features
from .modality import Modality
from .rerank import ReRank

__all__ = ["ProtocolResult", "evaluate_regdb", "evaluate_sysu", "run_protocol"]

logger = logging.getLogger(__name__)

Extract = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ProtocolResult:
    """The mean over trials (``average_trials``) and each trial's result."""

    mean: EvalResult
    trials: list[EvalResult]

    def summary(self) -> dict:
        """R1 / R5 / R10 / mAP / mINP of the mean and its CMC: what the trainer logs and the CLI writes."""
        cmc = self.mean.cmc.tolist()
        return {"R1": cmc[0], "R5": cmc[min(4, len(cmc) - 1)], "R10": cmc[min(9, len(cmc) - 1)],
                "mAP": self.mean.mAP, "mINP": self.mean.mINP, "cmc": cmc}


def run_protocol(es: EvalSet, extract: Extract, *, image_cmc: bool = False, rerank: ReRank | None = None
                 ) -> ProtocolResult:
    """Metrics of every gallery (trial) of the eval set against its queries, and their mean.
    ``extract(images, is_ir)`` gives the test features, L2-normalised here; the queries are extracted
    once. ``image_cmc``: SYSU's image-level CMC instead of the identity-level one (RegDB's is image-level).
    ``rerank``: rank by k-reciprocal re-ranked distances (:func:`~uvireid_ext.re_rank`) instead of
    minus the inner product."""
    def feats(images: Tensor, ir: bool) -> Tensor:
        return F.normalize(extract(images, torch.full((len(images),), ir)), dim=1)

    query_ir = es.q_modality == Modality.INFRARED
    qf = feats(es.query, query_ir)
    results: list[EvalResult] = []
    for g_img, g_pid, g_cam in es.galleries:
        gf = feats(g_img, not query_ir)
        dm = (pairwise_distance(qf, gf) if rerank is None else rerank(qf, gf)).cpu()
        if es.dataset == "sysu":
            results.append(eval_sysu(dm, es.q_pid, g_pid, es.q_cam, g_cam, image_cmc=image_cmc))
        else:
            results.append(eval_regdb(dm, es.q_pid, g_pid))
    return ProtocolResult(average_trials(results), results)


def _extractor(model: torch.nn.Module, *, output: int | None, flip: bool, batch_size: int,
               device: torch.device | str | None, progress: bool, desc: str) -> Extract:
    """Test features of a standard-interface model: fp32, re-normalised after the flip average."""
    def extract(images: Tensor, is_ir: Tensor) -> Tensor:
        return extract_features(model, images, is_ir, device=device, batch=batch_size, flip=flip, renorm=True,
                                amp=False, channels_last=False, output=output, progress=progress, desc=desc)
    return extract


def evaluate_sysu(model: torch.nn.Module, data_root: str, *, mode: str = "all", shot: int = 1,
                  trials: Iterable[int] = range(10), output: int | None = None, flip: bool = False,
                  batch_size: int = 64, device: torch.device | str | None = None, image_cmc: bool = False,
                  height: int = IMG_HEIGHT, width: int = IMG_WIDTH, progress: bool = True,
                  rerank: ReRank | None = None) -> tuple[EvalResult, list[EvalResult]]:
    """The SYSU-MM01 test protocol for ``model`` (``TwoStreamNet`` or any ``model(x, flag)`` module, see
    :func:`~uvireid_ext.features.extract_features`): infrared queries (cam3 + cam6, extracted once), per
    trial a gallery drawn with the trial as seed (``shot`` images per identity and camera), images resized
    to height × width. ``rerank``: re-ranked distances (:class:`~uvireid_ext.rerank.ReRank`). Returns (mean,
    per-trial results)."""
    trials = list(trials)
    es = load_eval_set("sysu", data_root, height, width, mode=mode, trials=trials, shot=shot)
    res = run_protocol(es, _extractor(model, output=output, flip=flip, batch_size=batch_size, device=device,
                                      progress=progress, desc="sysu"), image_cmc=image_cmc, rerank=rerank)
    for t, r in zip(trials, res.trials, strict=True):
        logger.info("sysu %s %d-shot trial %d: %s", mode, shot, t, r.summary())
    return res.mean, res.trials


def evaluate_regdb(model_for_trial: Callable[[int], torch.nn.Module], data_root: str, *,
                   trials: Iterable[int] = range(1, 11), direction: str = "v2t", output: int | None = None,
                   flip: bool = False, batch_size: int = 64, device: torch.device | str | None = None,
                   height: int = IMG_HEIGHT, width: int = IMG_WIDTH, progress: bool = True,
                   rerank: ReRank | None = None) -> tuple[EvalResult, list[EvalResult]]:
    """The RegDB test protocol: for each trial t the model trained on split t (``model_for_trial(t)``),
    query / gallery the trial's visible / thermal test lists (``direction`` "v2t") or the reverse ("t2v").
    ``rerank``: re-ranked distances (:class:`~uvireid_ext.rerank.ReRank`). Returns (mean, per-trial results)."""
    if direction not in ("v2t", "t2v"):
        raise ValueError(f"evaluate_regdb: direction must be 'v2t' or 't2v', got {direction!r}")
    per_trial = []
    for trial in trials:
        es = load_eval_set("regdb", data_root, height, width, trial=trial, direction=direction)
        extract = _extractor(model_for_trial(trial), output=output, flip=flip, batch_size=batch_size,
                             device=device, progress=progress, desc=f"regdb trial {trial}")
        r = run_protocol(es, extract, rerank=rerank).trials[0]
        logger.info("regdb %s trial %d: %s", direction, trial, r.summary())
        per_trial.append(r)
    return average_trials(per_trial), per_trial
