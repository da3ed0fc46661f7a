"""uvireid_ext.evaluate's metrics against a plain per-query reference written here (one stable sort per
query, the SYSU camera rule, the standard AP / INP / CMC definitions of docs/protocols.md)."""

import numpy as np
import pytest
import torch
from common import DEVICES

from uvireid_ext import evaluate
from uvireid_ext.evaluate import average_trials, eval_regdb, eval_sysu


def reference_metrics(distmat, q_pids, g_pids, q_cams=None, g_cams=None, max_rank=20, image_cmc=True):
    """(cmc, mAP, mINP, num_valid), one query at a time: rank the gallery by distance (ties by gallery
    index), drop every camera-2 item for a camera-3 query, skip queries without a match; the CMC counts
    the first match's rank (image-level) or the number of distinct identities up to it (identity-level)."""
    d = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    max_rank = min(max_rank, d.shape[1])
    cmc = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(d.shape[0]):
        order = np.argsort(d[i], kind="stable")
        if q_cams is not None and q_cams[i] == 3:
            order = order[np.asarray(g_cams)[order] != 2]
        ids = g_pids[order]
        ranks = np.flatnonzero(ids == q_pids[i]) + 1  # 1-based ranks of the matches
        if ranks.size == 0:
            continue
        aps.append(np.mean(np.arange(1, ranks.size + 1) / ranks))
        inps.append(ranks.size / ranks[-1])
        first = ranks[0] if image_cmc else len(set(ids[: ranks[0]].tolist()))
        cmc[first - 1 :] += 1
    return cmc / len(aps), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def eval_sysu_loop(d, qp, gp, qc, gc, image_cmc=False):
    return reference_metrics(d, qp, gp, qc, gc, image_cmc=image_cmc)


def eval_regdb_loop(d, qp, gp):
    return reference_metrics(d, qp, gp)


def sysu_like(rng, num_q, num_g, num_ids, levels=None):
    """Random SYSU-shaped inputs; ``levels`` quantises distances to force many ties."""
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.choice([3, 6], num_q)
    g_cams = rng.choice([1, 2, 4, 5], num_g)
    d = rng.standard_normal((num_q, num_g)).astype(np.float32)
    if levels is not None:
        d = np.round(d * levels / 3).astype(np.float32)
    return d, q_pids, g_pids, q_cams, g_cams


def assert_same(ours, ref):
    cmc, m_ap, m_inp, num_valid = ref
    np.testing.assert_allclose(ours.cmc.numpy(), cmc, rtol=0, atol=1e-12)
    assert ours.mAP == pytest.approx(m_ap, rel=1e-12, abs=1e-12)
    assert ours.mINP == pytest.approx(m_inp, rel=1e-12, abs=1e-12)
    assert ours.num_valid == num_valid


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [None, 4, 1])
@pytest.mark.parametrize("image_cmc", [False, True])
def test_sysu_matches_loop(device, levels, image_cmc):
    rng = np.random.default_rng(0 if levels is None else levels)
    for _ in range(3):
        d, qp, gp, qc, gc = sysu_like(rng, 60, 90, 12, levels)
        ours = eval_sysu(
            torch.from_numpy(d).to(device),
            torch.from_numpy(qp),
            torch.from_numpy(gp),
            torch.from_numpy(qc),
            torch.from_numpy(gc),
            image_cmc=image_cmc,
        )
        assert_same(ours, eval_sysu_loop(d, qp, gp, qc, gc, image_cmc=image_cmc))
        assert ours.num_query == 60


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [None, 2])
def test_regdb_matches_loop(device, levels):
    rng = np.random.default_rng(7)
    d, qp, gp, _, _ = sysu_like(rng, 50, 70, 10, levels)
    ours = eval_regdb(torch.from_numpy(d).to(device), qp, gp)
    assert_same(ours, eval_regdb_loop(d, qp, gp))


def test_multiple_chunks_and_float64(monkeypatch):
    """Row chunking (forced tiny) and float64 input give the loop's results."""
    monkeypatch.setattr(evaluate, "_CHUNK_ELEMENTS", 200)
    rng = np.random.default_rng(3)
    d, qp, gp, qc, gc = sysu_like(rng, 45, 40, 6, levels=3)
    d = d.astype(np.float64) + rng.integers(0, 2, d.shape) * 1e-12  # near-ties float32 would merge
    assert_same(eval_sysu(d, qp, gp, qc, gc), eval_sysu_loop(d, qp, gp, qc, gc))
    assert_same(eval_regdb(d, qp, gp), eval_regdb_loop(d, qp, gp))


def test_trials_average_like_the_scripts():
    rng = np.random.default_rng(11)
    ours, refs = [], []
    for _ in range(4):
        d, qp, gp, qc, gc = sysu_like(rng, 40, 30, 8)
        ours.append(eval_sysu(d, qp, gp, qc, gc))
        refs.append(eval_sysu_loop(d, qp, gp, qc, gc))
    mean = average_trials(ours)
    np.testing.assert_allclose(mean.cmc.numpy(), sum(r[0] for r in refs) / 4, atol=1e-6)
    assert mean.mAP == pytest.approx(sum(r[1] for r in refs) / 4, rel=1e-12)
    assert mean.mINP == pytest.approx(sum(r[2] for r in refs) / 4, rel=1e-12)


def test_cam3_drops_every_cam2_item():
    # Gallery: id 0 in cam2 (closest), id 1 in cam2, id 0 in cam4, id 2 in cam5.
    g_pids, g_cams = np.array([0, 1, 0, 2]), np.array([2, 2, 4, 5])
    d = np.array([[0.1, 0.2, 0.5, 0.3], [0.1, 0.2, 0.5, 0.3]], dtype=np.float32)
    q_pids, q_cams = np.array([0, 0]), np.array([3, 6])
    r = eval_sysu(d, q_pids, g_pids, q_cams, g_cams, max_rank=3, image_cmc=True)
    # cam3 query: kept list = [cam5 id2 (0.3), cam4 id0 (0.5)] -> first match at rank 2, AP 1/2, INP 1/2.
    # cam6 query: full list [id0, id1, id2, id0] -> ranks 1 and 4: AP (1 + 2/4)/2, INP 2/4.
    assert r.num_valid == 2
    np.testing.assert_allclose(r.cmc.numpy(), [0.5, 1.0, 1.0])
    assert r.mAP == pytest.approx((0.5 + 0.75) / 2)
    assert r.mINP == pytest.approx((0.5 + 0.5) / 2)
    # The positive only in cam2 makes a cam3 query invalid (skipped and counted), not a cam6 one.
    d2, g2 = d[:, :2], g_pids[:2]
    r2 = eval_sysu(d2, q_pids, g2, q_cams, g_cams[:2])
    assert (r2.num_valid, r2.num_query, r2.num_skipped) == (1, 2, 1)
    assert r2.mAP == pytest.approx(1.0) and r2.cmc[0] == 1.0


def test_identity_vs_image_cmc_and_small_gallery():
    # Two negatives of the same id ahead of the match: identity rank 2, image rank 3.
    d = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    args = (d, np.array([5]), np.array([7, 7, 5]), np.array([6]), np.array([1, 4, 5]))
    ident = eval_sysu(*args)  # max_rank 20 -> reduced to the gallery size 3
    image = eval_sysu(*args, image_cmc=True)
    np.testing.assert_allclose(ident.cmc.numpy(), [0, 1, 1])
    np.testing.assert_allclose(image.cmc.numpy(), [0, 0, 1])
    assert ident.mAP == image.mAP == pytest.approx(1 / 3)
    assert ident.mINP == pytest.approx(1 / 3)
    ref = eval_sysu_loop(*args)
    np.testing.assert_allclose(ident.cmc.numpy(), ref[0])


def test_ties_broken_by_gallery_index():
    d = np.zeros((1, 4), dtype=np.float32)  # all tied: order = gallery index
    r = eval_regdb(d, np.array([1]), np.array([0, 1, 0, 1]), max_rank=4)
    np.testing.assert_allclose(r.cmc.numpy(), [0, 1, 1, 1])
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert r.mINP == pytest.approx(2 / 4)


def test_bad_input():
    d = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"eval_sysu: distmat shape \(2, 3\) does not match len\(q_pids\)=3"):
        eval_sysu(d, [1, 2, 3], [1, 2, 3], [3, 3], [1, 1, 1])
    with pytest.raises(ValueError, match=r"eval_sysu: distmat shape .* len\(q_camids\)=1"):
        eval_sysu(d, [1, 2], [1, 2, 3], [3], [1, 1, 1])
    with pytest.raises(ValueError, match="eval_regdb: empty gallery"):
        eval_regdb(np.zeros((2, 0), np.float32), [1, 2], np.zeros(0, np.int64))
    bad = d.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"eval_regdb: distmat holds 1 non-finite .* \[1, 2\] = nan"):
        eval_regdb(bad, [1, 2], [1, 2, 3])
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        eval_sysu(bad, [1, 2], [1, 2, 3], [3, 6], [1, 2, 4])
    with pytest.raises(ValueError, match="eval_regdb: no query has a match"):
        eval_regdb(d, [8, 9], [1, 2, 3])
    with pytest.raises(ValueError, match="eval_regdb: distmat must be floating point"):
        eval_regdb(np.zeros((2, 3), np.int64), [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="eval_regdb: max_rank must be an int >= 1, got 0"):
        eval_regdb(d, [1, 2], [1, 2, 3], max_rank=0)
    with pytest.raises(ValueError, match="eval_regdb: q_pids must hold integer ids"):
        eval_regdb(d, [1.0, 2.0], [1, 2, 3])
