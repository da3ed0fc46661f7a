"""Drop-in replacements for the functions re-ID pipelines call today, with their signatures and
results, so that switching is a change of one import line (docs/compat.md).

- :func:`compute_jaccard_distance`: cluster-contrast's clustering distance (ADCA, PGM, MMM, ...).
- :func:`re_ranking`: the classic k-reciprocal re-ranking from distance matrices (torchreid, AGW,
  cluster-contrast's ``rerank.py``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from .ops.distance import jaccard_distance
from .rerank import check_settings, re_rank_rows

__all__ = ["compute_jaccard_distance", "re_ranking"]

logger = logging.getLogger(__name__)


def compute_jaccard_distance(target_features: Tensor, k1: int = 20, k2: int = 6, print_flag: bool = True,
                             search_option: int = 0, use_float16: bool = False) -> np.ndarray:
    """cluster-contrast's ``compute_jaccard_distance``: the dense [N, N] Jaccard distance of the
    k-reciprocal encodings of ``target_features`` [N, D] (used as given), as a NumPy array.

    ``search_option`` picked faiss's search (GPU variants 0–2, CPU 3); here the exact kNN of
    :func:`uvireid_ext.knn` always runs on the features' device, so any of 0–3 is accepted and gives
    the same result. ``use_float16`` stored the matrices in float16; here the computation stays in
    float32 and only the result is returned as float16. ``print_flag`` prints the start and the time
    taken, as the original does.
    """
    fn = "compute_jaccard_distance"
    if search_option not in (0, 1, 2, 3):
        raise ValueError(f"{fn}: search_option must be 0, 1, 2 or 3, got {search_option!r}")
    if not isinstance(target_features, Tensor):
        target_features = torch.as_tensor(np.asarray(target_features))
    t = time.time()
    if print_flag:
        print("Computing jaccard distance...")
    d = jaccard_distance(target_features, k1, k2).cpu().numpy()
    if print_flag:
        print(f"Jaccard distance computing time cost: {time.time() - t}")
    return d.astype(np.float16) if use_float16 else d


class _MatrixRows:
    """Sᵀ rows of the assembled, squared distance matrix [[q_q, q_g], [q_gᵀ, g_g]]."""

    def __init__(self, s: Tensor) -> None:
        self.s = s
        self.n, self.device, self.pair_bytes = s.shape[0], s.device, 4
        self.symmetric = False  # the gallery block is used as given

    def rows(self, start: int, stop: int, col0: int = 0) -> Tensor:
        return self.s[col0:, start:stop].T.contiguous()

    def gather(self, start: int, members: Tensor) -> Tensor:
        own = torch.arange(start, start + len(members), device=members.device)[:, None]
        return self.s[members.clamp_min(0), own]


def _matrix(fn: str, name: str, m: object, shape: tuple[int, int]) -> Tensor:
    t = torch.as_tensor(np.asarray(m)) if not isinstance(m, Tensor) else m
    if t.dim() != 2 or tuple(t.shape) != shape or not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating point matrix of shape {shape}, got "
                         f"{t.dtype} {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}: {name} holds NaN or Inf")
    return t


def re_ranking(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """The classic ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``: [Q, G] float32
    re-ranked distances from plain (unsquared) query–gallery [Q, G], query–query [Q, Q] and
    gallery–gallery [G, G] distance matrices (NumPy arrays or tensors), as a NumPy array. The
    matrices are used as given (squared, then column-max normalised, as the original does)."""
    fn = "re_ranking"
    qg = torch.as_tensor(np.asarray(q_g_dist)) if not isinstance(q_g_dist, Tensor) else q_g_dist
    if qg.dim() != 2:
        raise ValueError(f"{fn}: q_g_dist must be a [Q, G] matrix, got shape {tuple(qg.shape)}")
    q, g = qg.shape
    qg = _matrix(fn, "q_g_dist", qg, (q, g))
    qq = _matrix(fn, "q_q_dist", q_q_dist, (q, q))
    gg = _matrix(fn, "g_g_dist", g_g_dist, (g, g))
    if q == 0 or g == 0:
        return np.zeros((q, g), dtype=np.float32)
    check_settings(fn, q + g, k1, k2, lambda_value)
    dev = qg.device
    full = torch.cat([torch.cat([qq.to(dev), qg], 1), torch.cat([qg.T, gg.to(dev)], 1)])
    squared = (full * full).float()  # squared in the input's precision, then float32, as the original
    return re_rank_rows(_MatrixRows(squared), q, k1, k2, lambda_value, fn).cpu().numpy()
