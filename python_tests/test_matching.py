"""MMLM: the cost formula against a loop, Hungarian vs greedy, label transfer, end to end on blobs."""

from __future__ import annotations

import pytest
import torch

from uvireid_ext.matching import match_clusters, mmlm, mmlm_cost, transfer_labels


def test_cost_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    vc, rc = torch.randn(5, 4, 8, generator=g), torch.randn(7, 3, 8, generator=g)
    cost = mmlm_cost(vc, rc, block=2)  # several blocks
    assert cost.shape == (5, 7)
    for v in range(5):
        for r in range(7):
            want = sum(min(float(torch.linalg.norm(rc[r, i] - vc[v, j])) for j in range(4)) for i in range(3))
            assert abs(float(cost[v, r]) - want) < 1e-4


def test_hungarian_vs_greedy() -> None:
    cost = torch.tensor([[1.0, 2.0, 9.0], [1.5, 5.0, 9.0], [9.0, 9.0, 0.5]])
    # Greedy: both 0 and 1 pick IR cluster 0 (many-to-one, as MMM's code does).
    assert match_clusters(cost, "greedy").tolist() == [0, 0, 2]
    # Hungarian: one-to-one minimum total cost (1: 2 + 1.5 + 0.5 = 4 beats 1 + 5 + 0.5).
    assert match_clusters(cost, "hungarian").tolist() == [1, 0, 2]
    # More visible than IR clusters: the leftover gets -1, and transfer gives it a fresh id.
    m = match_clusters(cost[:, :2], "hungarian")
    assert sorted(m.tolist()) == [-1, 0, 1]
    with pytest.raises(ValueError, match="match_clusters: expected method 'hungarian' or 'greedy', got 'x'"):
        match_clusters(cost, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="match_clusters: cost holds NaN"):
        match_clusters(torch.full((2, 2), float("nan")))


def test_transfer_labels() -> None:
    labels = torch.tensor([0, 1, -1, 2, 1, 0])
    assert transfer_labels(labels, torch.tensor([3, -1, 0]), 4).tolist() == [3, 4, -1, 0, 4, 3]
    with pytest.raises(
        ValueError, match="transfer_labels: vis_labels holds id 2 but match covers 2 clusters"
    ):
        transfer_labels(labels, torch.tensor([0, 1]), 2)


@pytest.mark.parametrize("method", ["hungarian", "greedy"])
def test_mmlm_recovers_identities(method: str) -> None:
    # 6 identities; the IR features are the visible ones shifted slightly, clusters numbered differently.
    g = torch.Generator().manual_seed(1)
    ids = 6
    protos = torch.nn.functional.normalize(torch.randn(ids, 16, generator=g), dim=1) * 3
    vis_id = torch.arange(ids).repeat_interleave(10)
    ir_id = torch.arange(ids).repeat_interleave(8)
    vis = protos[vis_id] + 0.1 * torch.randn(vis_id.numel(), 16, generator=g)
    ir = protos[ir_id] + 0.1 * torch.randn(ir_id.numel(), 16, generator=g) + 0.05
    perm = torch.randperm(ids, generator=g)
    ir_labels = perm[ir_id]
    vis_labels = vis_id.clone()
    vis_labels[:3] = -1
    res = mmlm(vis, vis_labels, ir, ir_labels, n=4, method=method)
    assert res.match.tolist() == perm.tolist()  # every cluster, the last one included
    assert res.vis_labels[:3].tolist() == [-1, -1, -1]
    assert torch.equal(res.vis_labels[3:], perm[vis_id[3:]])
    assert torch.equal(res.ir_labels, ir_labels)
    with pytest.raises(ValueError, match=r"mmlm: expected vis_features \[N, D\] and vis_labels \[N\]"):
        mmlm(vis, vis_labels[1:], ir, ir_labels)
