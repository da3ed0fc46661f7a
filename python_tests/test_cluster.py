"""uvireid_ext.cluster entry point (with the classic dense Jaccard standing in for the distance op
until it is merged), joint instance selection, and ARI under the three outlier conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

import uvireid_ext.cluster as clu
from uvireid_ext.metrics import ari, format_ari
from uvireid_ext.modality import Modality
from uvireid_ext.reference.classic_jaccard import classic_jaccard


def fake_reid(ids: int = 8, per: int = 12, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.normalize(torch.randn(ids, dim, generator=g), dim=1)
    pid = torch.arange(ids).repeat_interleave(per)
    modality = torch.arange(pid.numel()) % 2
    camera = modality * 3 + torch.randint(0, 3, (pid.numel(),), generator=g)
    x = torch.nn.functional.normalize(protos[pid] + 0.15 * torch.randn(pid.numel(), dim, generator=g), dim=1)
    return x, pid, modality, camera


@pytest.fixture
def classic_distance(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records each distance call the entry point makes; the real sparse Jaccard op still runs."""
    calls: list = []
    real = clu._jaccard_distance

    def recording(features, cfg, modality, camera, eps):  # noqa: ANN001
        calls.append((cfg, modality is not None, camera is not None))
        return real(features, cfg, modality, camera, eps)

    monkeypatch.setattr(clu, "_jaccard_distance", recording)
    return calls


def test_entry_point_matches_classic_dbscan(classic_distance: list) -> None:
    x, pid, modality, camera = fake_reid()
    cfg = clu.ClusterConfig(clu.JaccardConfig(10, 4), clu.JaccardConfig(12, 6, "modality"), eps=0.6)
    out = clu.pseudo_labels(x, modality, camera, config=cfg)
    for labels, idx, k1, k2 in (
        (out.visible, out.visible_index, 10, 4),
        (out.infrared, out.infrared_index, 10, 4),
    ):
        dist = classic_jaccard(x[idx].numpy(), k1, k2)
        sk = DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit(dist).labels_
        assert (labels.numpy() < 0).tolist() == (sk < 0).tolist()
        core = sk >= 0
        assert (np.equal.outer(labels[core], labels[core]) == np.equal.outer(sk[core], sk[core])).all()
        assert ari(labels, pid[idx])["outliers_one_cluster"] > 0.9
    assert torch.equal(out.visible_index, (modality == Modality.VISIBLE).nonzero().flatten())
    assert out.joint is not None and out.joint.shape == (x.shape[0],)
    # Every joint cluster kept holds both modalities.
    for c in out.joint.unique().tolist():
        if c >= 0:
            assert modality[out.joint == c].unique().numel() == 2
    # Intra runs get camera only, the joint run modality and camera.
    assert [(c.k1, m, cam) for c, m, cam in classic_distance] == [
        (10, False, True),
        (10, False, True),
        (12, True, True),
    ]


def test_configs() -> None:
    sysu, regdb = clu.CONFIGS[("baseline", "sysu")], clu.CONFIGS[("baseline", "regdb")]
    assert (sysu.intra.k1, sysu.intra.k2, sysu.intra.expansion, sysu.eps, sysu.min_samples) == (
        30,
        6,
        "plain",
        0.6,
        4,
    )
    assert (sysu.joint.k1, sysu.joint.k2, sysu.joint.expansion) == (40, 32, "modality")
    assert (regdb.joint.k1, regdb.joint.k2, regdb.eps) == (38, 18, 0.3)
    assert clu.CONFIGS[("ecul", "sysu")].intra.expansion == "emcc"
    assert clu.CONFIGS[("mmm", "regdb")] == regdb


def test_no_cluster_warns(classic_distance: list) -> None:
    x, _, modality, camera = fake_reid(ids=3, per=20)
    cfg = clu.ClusterConfig(clu.JaccardConfig(10, 4), clu.JaccardConfig(10, 4), eps=1e-6, min_samples=4)
    with pytest.warns(UserWarning, match="cluster: DBSCAN found no cluster in the visible set"):
        out = clu.pseudo_labels(x, modality, camera, config=cfg, joint=False)
    assert (out.visible == -1).all() and (out.infrared == -1).all() and out.joint is None


def test_select_cross_modality() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, 3])
    modality = torch.tensor([0, 1, 0, 0, 1, 0, 1, 1])
    # Cluster 1 is visible-only, 3 infrared-only: dropped; 0 and 2 survive as 0 and 1.
    assert clu.select_cross_modality(labels, modality).tolist() == [0, 0, -1, -1, 1, 1, -1, -1]
    assert (
        clu.select_cross_modality(torch.full((3,), -1), torch.zeros(3, dtype=torch.int64)).tolist()
        == [-1] * 3
    )


def test_bad_input() -> None:
    x, _, modality, camera = fake_reid()
    with pytest.raises(ValueError, match=r"cluster: expected modality of shape \[96\], got \(95,\)"):
        clu.pseudo_labels(x, modality[1:], camera)
    with pytest.raises(ValueError, match=r"cluster: expected camera of shape \[96\], got \(2,\)"):
        clu.pseudo_labels(x, modality, camera[:2])
    with pytest.raises(ValueError, match="cluster: modality must hold 0 \\(visible\\) or 1 \\(infrared\\)"):
        clu.pseudo_labels(x, modality + 1, camera)
    with pytest.raises(ValueError, match="cluster: expected integer modality"):
        clu.pseudo_labels(x, modality.float(), camera)
    with pytest.raises(ValueError, match="cluster: no configuration for recipe='x'"):
        clu.pseudo_labels(x, modality, camera, recipe="x")
    # the row of the caller's features, not its index inside the visible or infrared subset
    row = int((modality == Modality.INFRARED).nonzero()[20])
    assert row != 20
    bad = x.clone()
    bad[row, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"cluster: features row {row} is not finite \(NaN or Inf\)"):
        clu.pseudo_labels(bad, modality, camera)
    if torch.device("meta") != x.device:
        with pytest.raises(ValueError, match="cluster: modality on meta but features on cpu"):
            clu.pseudo_labels(x, modality.to("meta"), camera)


def test_ari_conventions() -> None:
    truth = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    perfect = torch.tensor([5, 5, 5, 7, 7, 7, 9, 9])
    assert all(v == 1.0 for v in ari(perfect, truth).values())
    pred = torch.tensor([0, 0, -1, 1, 1, -1, -1, -1])
    scores = ari(pred, truth)
    assert set(scores) == {"outliers_one_cluster", "outliers_singletons", "outliers_excluded"}
    assert scores["outliers_excluded"] == 1.0  # the kept points are perfectly clustered
    assert scores["outliers_one_cluster"] < 1.0 and scores["outliers_singletons"] < 1.0
    assert scores["outliers_one_cluster"] != scores["outliers_singletons"]
    assert math.isnan(ari(torch.full((4,), -1), truth[:4])["outliers_excluded"])
    line = format_ari(scores)
    assert "ARI[outliers_one_cluster]=" in line and "ARI[outliers_excluded]=1.0000" in line
    with pytest.raises(ValueError, match="ari: pred and truth differ in length: 3 vs 8"):
        ari(pred[:3], truth)
