"""protocol.py: the one protocol runner (per-trial results, mean, the logged summary) and the public
evaluate_sysu / evaluate_regdb built on it, end to end on generated sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uvireid_ext.data import regdb, sysu
from uvireid_ext.data.sets import load_eval_set
from uvireid_ext.data.synthetic import make_regdb, make_sysu
from uvireid_ext.evaluate import average_trials, eval_sysu, pairwise_distance
from uvireid_ext.features import extract_features
from uvireid_ext.modality import StemFlag
from uvireid_ext.model import TwoStreamNet
from uvireid_ext.protocol import evaluate_regdb, evaluate_sysu, run_protocol

H, W = 64, 32


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("sysu"))
    make_sysu(root, ids=14, seed=3, per_camera=10)
    return root


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("regdb"))
    make_regdb(root, ids=6, seed=1, per_modality=4)
    return root


class ColourStats(torch.nn.Module):
    """A parameter-free stand-in with the standard interface: per-stripe channel means, and the flags it
    was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: set[StemFlag] = set()

    def forward(self, x: torch.Tensor, flag: StemFlag) -> torch.Tensor:
        self.flags.add(flag)
        return F.adaptive_avg_pool2d(x, (6, 1)).flatten(1)


def test_run_protocol_trials_mean_and_summary(sysu_root) -> None:
    es = load_eval_set("sysu", sysu_root, H, W, trials=2)
    model = ColourStats()

    def extract(images: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
        return extract_features(model, images, is_ir, flip=False)

    res = run_protocol(es, extract)
    assert len(res.trials) == 2
    qf = F.normalize(extract(es.query, torch.ones(len(es.query), dtype=torch.bool)), dim=1)
    for r, (g_img, g_pid, g_cam) in zip(res.trials, es.galleries, strict=True):
        gf = F.normalize(extract(g_img, torch.zeros(len(g_img), dtype=torch.bool)), dim=1)
        direct = eval_sysu(pairwise_distance(qf, gf), es.q_pid, g_pid, es.q_cam, g_cam)
        assert torch.equal(r.cmc, direct.cmc) and r.mAP == direct.mAP and r.mINP == direct.mINP
    mean = average_trials(res.trials)
    assert torch.equal(res.mean.cmc, mean.cmc) and res.mean.mAP == mean.mAP
    s = res.summary()
    assert s["R1"] == s["cmc"][0] == float(mean.cmc[0]) and s["R10"] == float(mean.cmc[9])
    assert (s["mAP"], s["mINP"]) == (mean.mAP, mean.mINP) and len(s["cmc"]) == len(mean.cmc)
    image = run_protocol(es, extract, image_cmc=True)
    assert image.mean.mAP == res.mean.mAP and bool((image.mean.cmc <= res.mean.cmc).all())


def test_evaluate_sysu_end_to_end(sysu_root) -> None:
    model = ColourStats()
    mean, trials = evaluate_sysu(model, sysu_root, trials=[0, 1], progress=False)
    assert model.flags == {StemFlag.VISIBLE, StemFlag.INFRARED}
    q = sysu.process_query_sysu(sysu_root)[0]
    assert len(trials) == 2 and mean.num_query == len(q) and mean.num_valid == len(q)
    g = sysu.process_gallery_sysu(sysu_root, trial=0)[0]
    assert 0 < mean.mAP <= 1 and len(mean.cmc) == min(20, len(g))
    ind, _ = evaluate_sysu(ColourStats(), sysu_root, mode="indoor", trials=[0], progress=False)
    assert ind.num_valid < ind.num_query  # identities never seen indoors have no match
    multi, _ = evaluate_sysu(ColourStats(), sysu_root, shot=10, trials=[0], progress=False, height=H, width=W)
    assert multi.num_query == len(q) and 0 < multi.mAP <= 1


def test_evaluate_sysu_equals_the_trainer_path_for_a_two_stream_net(sysu_root) -> None:
    torch.manual_seed(0)
    net = TwoStreamNet("small")
    mean, _ = evaluate_sysu(net, sysu_root, trials=[0, 1], flip=True, height=H, width=W, progress=False)
    es = load_eval_set("sysu", sysu_root, H, W, trials=2)
    trainer_way = run_protocol(es, lambda x, ir: extract_features(net, x, ir, flip=True)).mean
    np.testing.assert_allclose(mean.cmc.numpy(), trainer_way.cmc.numpy(), atol=1e-12)
    assert mean.mAP == pytest.approx(trainer_way.mAP, rel=1e-6)


@pytest.mark.parametrize("direction", ["v2t", "t2v"])
def test_evaluate_regdb_end_to_end(regdb_root, direction: str) -> None:
    seen: list[int] = []

    def model_for_trial(t: int) -> ColourStats:
        seen.append(t)
        return ColourStats()

    r, per = evaluate_regdb(model_for_trial, regdb_root, trials=[1, 2], direction=direction, progress=False)
    assert seen == [1, 2] and len(per) == 2
    n_test = len(regdb.process_test_regdb(regdb_root, trial=1, modality="visible")[0])
    assert r.num_query == n_test == 3 * 4
    assert r.mAP == pytest.approx((per[0].mAP + per[1].mAP) / 2)
    with pytest.raises(ValueError, match="evaluate_regdb: direction must be 'v2t' or 't2v', got 'x'"):
        evaluate_regdb(model_for_trial, regdb_root, direction="x")
