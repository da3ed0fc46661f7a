"""Baseline: the standard per-query Python/NumPy evaluation loop (AGW ``eval_sysu`` / ``eval_regdb``
semantics), written by us from the description in ``docs/protocols.md`` (SYSU-MM01, RegDB, metrics).

It is what VI-ReID users run today; the benchmark times it and the tests use it as the oracle for
``uvireid_ext.evaluate``. Two deliberate, documented deviations:

- ``kind``: the sort used for ranking. The standard code calls ``np.argsort`` with NumPy's default
  (unstable) quicksort; tests pass ``kind="stable"`` so tied distances are ordered by gallery index, the
  tie rule ``uvireid_ext.evaluate`` documents.
- a query whose kept list is shorter than ``max_rank`` (or that has fewer distinct identities) gets its
  CMC padded with its last value instead of producing a ragged array (the original would fail there).
"""

from __future__ import annotations

import numpy as np


def _pad(v: np.ndarray, n: int) -> np.ndarray:
    if len(v) >= n:
        return v[:n]
    last = v[-1] if len(v) else 0
    return np.concatenate([v, np.full(n - len(v), last, dtype=v.dtype)])


def _score_query(raw_cmc: np.ndarray, max_rank: int) -> tuple[np.ndarray, float, float]:
    """Image-level CMC (padded to max_rank), AP and INP of one query's kept 0/1 match list (>= 1 match)."""
    cmc = raw_cmc.cumsum()
    pos_idx = np.where(raw_cmc == 1)
    pos_max_idx = np.max(pos_idx)
    inp = cmc[pos_max_idx] / (pos_max_idx + 1.0)
    cmc[cmc > 1] = 1
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
    tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
    return _pad(cmc, max_rank), tmp_cmc.sum() / num_rel, inp


def eval_sysu_loop(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20, kind="quicksort", image_cmc=False
):
    """Returns (cmc, mAP, mINP, num_valid). cmc is identity-level unless image_cmc."""
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
        print(f"Note: number of gallery samples is quite small, got {num_g}")
    indices = np.argsort(distmat, axis=1, kind=kind)
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

    new_all_cmc, all_cmc, all_AP, all_INP = [], [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]
        order = indices[q_idx]
        # A camera-3 query ignores every camera-2 gallery image (same location), whatever the identity.
        remove = (q_camid == 3) & (g_camids[order] == 2)
        keep = np.invert(remove)

        # Identity-level CMC: first occurrence of each identity in the kept ranked list.
        new_cmc = pred_label[q_idx][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = np.asarray([new_cmc[index] for index in sorted(new_index)])
        new_match = (new_cmc == q_pid).astype(np.int32)
        new_cmc = new_match.cumsum()
        new_all_cmc.append(_pad(new_cmc, max_rank))

        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc, ap, inp = _score_query(orig_cmc, max_rank)
        all_cmc.append(cmc)
        all_AP.append(ap)
        all_INP.append(inp)
        num_valid_q += 1.0

    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    chosen = all_cmc if image_cmc else new_all_cmc
    out_cmc = np.asarray(chosen).astype(np.float32).sum(0) / num_valid_q
    return out_cmc, np.mean(all_AP), np.mean(all_INP), int(num_valid_q)


def eval_regdb_loop(distmat, q_pids, g_pids, max_rank=20, kind="quicksort"):
    """Returns (cmc, mAP, mINP, num_valid); image-level CMC, no camera filtering."""
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
        print(f"Note: number of gallery samples is quite small, got {num_g}")
    indices = np.argsort(distmat, axis=1, kind=kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    # All query cameras 1, all gallery cameras 2: the same-id-same-camera rule removes nothing.
    q_camids = np.ones(num_q).astype(np.int32)
    g_camids = 2 * np.ones(num_g).astype(np.int32)

    all_cmc, all_AP, all_INP = [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        cmc, ap, inp = _score_query(raw_cmc, max_rank)
        all_cmc.append(cmc)
        all_AP.append(ap)
        all_INP.append(inp)
        num_valid_q += 1.0

    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    out_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return out_cmc, np.mean(all_AP), np.mean(all_INP), int(num_valid_q)
