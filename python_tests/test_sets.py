"""data/sets.py: the in-memory training and evaluation sets of a small generated SYSU / RegDB tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvireid_ext.data import read_resized, regdb, sysu
from uvireid_ext.data.sets import load_eval_set, load_train_set
from uvireid_ext.data.synthetic import make_regdb, make_sysu
from uvireid_ext.modality import Modality

H, W = 32, 16


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("sysu"))
    make_sysu(root, ids=12, test_ids=4, seed=2, per_camera=3, size=(W, H))
    return root


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("regdb"))
    make_regdb(root, ids=6, seed=1, per_modality=4, size=(W, H))
    return root


def test_sysu_train_set(sysu_root) -> None:
    ts = load_train_set("sysu", sysu_root, H, W)
    rgb, ir = sysu.train_files(sysu_root)
    n = len(rgb) + len(ir)
    assert len(ts) == n and ts.images.shape == (n, H, W, 3) and ts.images.dtype == torch.uint8
    assert ts.modality.tolist() == [Modality.VISIBLE] * len(rgb) + [Modality.INFRARED] * len(ir)
    assert set(ts.camera[: len(rgb)].tolist()) <= {1, 2, 4, 5} and set(ts.camera[len(rgb):].tolist()) <= {3, 6}
    train_ids = {int(i) for i in sysu.read_ids(sysu_root, "train") + sysu.read_ids(sysu_root, "val")}
    assert set(ts.pid.tolist()) == train_ids
    np.testing.assert_array_equal(ts.images[len(rgb)].numpy(), read_resized(ir[0], W, H))


def test_sysu_eval_set_trials_and_shots(sysu_root) -> None:
    es = load_eval_set("sysu", sysu_root, H, W, trials=3)
    q, qp, qc = sysu.process_query_sysu(sysu_root)
    assert es.q_modality == Modality.INFRARED and es.query.shape == (len(q), H, W, 3)
    np.testing.assert_array_equal(es.q_pid, qp)
    np.testing.assert_array_equal(es.q_cam, qc)
    assert len(es.galleries) == 3
    for t, (g_img, g_pid, g_cam) in enumerate(es.galleries):
        g, gp, gc = sysu.process_gallery_sysu(sysu_root, trial=t)
        assert g_img.shape == (len(g), H, W, 3) and set(g_cam.tolist()) <= {1, 2, 4, 5}
        np.testing.assert_array_equal(g_pid, gp)
        np.testing.assert_array_equal(g_img[-1].numpy(), read_resized(g[-1], W, H))
    # trial numbers instead of a count: the same galleries
    two = load_eval_set("sysu", sysu_root, H, W, trials=[2])
    assert torch.equal(two.galleries[0][0], es.galleries[2][0])
    multi = load_eval_set("sysu", sysu_root, H, W, trials=[0], shot=10, mode="indoor")
    g, gp, _ = sysu.process_gallery_sysu(sysu_root, mode="indoor", trial=0, shot=10)
    assert len(multi.galleries[0][1]) == len(g) and len(g) % 10 == 0
    with pytest.raises(ValueError, match="SYSU-MM01's protocol is infrared → visible"):
        load_eval_set("sysu", sysu_root, H, W, direction="v2t")


def test_regdb_sets_and_directions(regdb_root) -> None:
    ts = load_train_set("regdb", regdb_root, H, W, trial=2)
    vp, vl, tp, tl = regdb.load_regdb_train(regdb_root, trial=2)
    assert len(ts) == len(vp) + len(tp) and ts.images.shape[1:] == (H, W, 3)
    assert ts.modality.tolist() == [Modality.VISIBLE] * len(vp) + [Modality.INFRARED] * len(tp)
    assert ts.camera.eq(0).all() and ts.pid.tolist() == vl.tolist() + tl.tolist()

    v2t = load_eval_set("regdb", regdb_root, H, W, trial=2)
    t2v = load_eval_set("regdb", regdb_root, H, W, trial=2, direction="t2v")
    assert v2t.q_modality == Modality.VISIBLE and t2v.q_modality == Modality.INFRARED
    assert len(v2t.galleries) == len(t2v.galleries) == 1
    assert torch.equal(v2t.query, t2v.galleries[0][0]) and torch.equal(t2v.query, v2t.galleries[0][0])
    np.testing.assert_array_equal(v2t.q_pid, t2v.galleries[0][1])
    with pytest.raises(ValueError, match="load_eval_set: direction must be 'v2t' or 't2v', got 'up'"):
        load_eval_set("regdb", regdb_root, H, W, direction="up")


def test_unknown_dataset_and_missing_root(sysu_root, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'market'"):
        load_eval_set("market", sysu_root, H, W)
    with pytest.raises(ValueError, match="unknown dataset 'market'"):
        load_train_set("market", sysu_root, H, W)
    with pytest.raises(FileNotFoundError, match="data root not found"):
        load_eval_set("sysu", str(tmp_path / "nowhere"), H, W)
