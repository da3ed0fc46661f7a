"""dbscan beyond the sample registry (test_ops_registry.py): scikit-learn's partition on random
graphs (ties, duplicates), the documented border rule, first-appearance ids, the wrapper's dense and
sparse paths and checks, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import DEVICES
from op_samples import cliques, random_distances
from op_samples import csr_of as to_csr
from op_samples import parts as _parts
from sklearn.cluster import DBSCAN

from uvireid_ext.ops.cluster import dbscan, dbscan_csr

pytestmark = pytest.mark.filterwarnings("ignore:Sparse")


def check_against_sklearn(d: torch.Tensor, labels: torch.Tensor, eps: float, min_samples: int) -> None:
    dn = d.numpy()  # same dtype as the op saw: both compare d <= eps in that dtype
    sk = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(dn)
    ours = labels.cpu().numpy()
    n = dn.shape[0]
    core = np.zeros(n, dtype=bool)
    core[sk.core_sample_indices_] = True
    assert ((dn <= eps).sum(1) >= min_samples).tolist() == core.tolist()
    # Noise is the same set; core points are partitioned identically.
    assert ((ours < 0) == (sk.labels_ < 0)).all()
    c = np.flatnonzero(core)
    assert (np.equal.outer(ours[c], ours[c]) == np.equal.outer(sk.labels_[c], sk.labels_[c])).all()
    assert len(set(ours[ours >= 0])) == len(set(sk.labels_[sk.labels_ >= 0]))
    # Border rule: the cluster of the nearest core neighbour, ties to the lower index.
    for i in np.flatnonzero(~core & (ours >= 0)):
        cand = [j for j in c if j != i and dn[i, j] <= eps]
        best = min(cand, key=lambda j: (dn[i, j], j))
        assert ours[i] == ours[best]
    # Ids by first appearance: 0, 1, 2, ... in index order.
    seen = list(dict.fromkeys(ours[ours >= 0].tolist()))
    assert seen == list(range(len(seen)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_samples", [1, 3, 5])
def test_matches_sklearn_random(device: str, seed: int, min_samples: int) -> None:
    d = random_distances(60, seed, dup=4 if seed % 2 else 0)
    eps = 0.2
    labels = dbscan(d.to(device), eps, min_samples)
    assert labels.dtype == torch.int64 and labels.device.type == device
    check_against_sklearn(d, labels, eps, min_samples)
    # The sparse path (extra entries beyond eps, diagonal stored or not) gives the same labels.
    for keep_diagonal in (True, False):
        sparse = to_csr(d, 0.35, keep_diagonal).to(device)
        assert torch.equal(dbscan(sparse, eps, min_samples).cpu(), labels.cpu())


def test_float64_values_and_eps_tie() -> None:
    d = torch.tensor(
        [[0, 0.5, 0.5, 2], [0.5, 0, 0.5, 2], [0.5, 0.5, 0, 2], [2, 2, 2, 0]], dtype=torch.float64
    )
    # d == eps counts (inclusive, as in scikit-learn); the far point is noise.
    assert dbscan(d, 0.5, 3).tolist() == [0, 0, 0, -1]
    assert dbscan(d, 0.49, 3).tolist() == [-1, -1, -1, -1]
    check_against_sklearn(d, dbscan(d, 0.5, 3), 0.5, 3)


def test_border_rule_and_first_appearance() -> None:
    d = cliques()  # 0 is a border point between core cliques {1..4} and {5..8}; it is nearer to 6
    labels = dbscan(d, 0.35, 4)
    # 0 joins 6's cluster, which therefore appears first and gets id 0.
    assert labels.tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 0]
    check_against_sklearn(d, labels, 0.35, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_cases(device: str) -> None:
    empty = torch.zeros(0, 0, device=device)
    assert dbscan(empty, 0.5, 4).shape == (0,)
    one = torch.zeros(1, 1, device=device)
    assert dbscan(one, 0.5, 1).tolist() == [0]
    assert dbscan(one, 0.5, 2).tolist() == [-1]
    # Isolated points only (no stored entries at all): noise, or singletons with min_samples=1.
    crow = torch.zeros(4, dtype=torch.int64, device=device)
    col = torch.zeros(0, dtype=torch.int64, device=device)
    val = torch.zeros(0, device=device)
    assert dbscan_csr(crow, col, val, 0.5, 2).tolist() == [-1, -1, -1]
    assert dbscan_csr(crow, col, val, 0.5, 1).tolist() == [0, 1, 2]
    # All points identical: one cluster.
    assert dbscan(torch.zeros(5, 5, device=device), 0.1, 4).tolist() == [0] * 5


def test_compile() -> None:
    d = random_distances(30, 1)
    crow, col, val = _parts(to_csr(d, 0.4, True))
    fn = torch.compile(lambda a, b, c: dbscan_csr(a, b, c, 0.2, 3) + 1, fullgraph=True)
    assert torch.equal(fn(crow, col, val), dbscan_csr(crow, col, val, 0.2, 3) + 1)


def test_bad_input() -> None:
    d = random_distances(8, 0)
    with pytest.raises(ValueError, match="dbscan: expected eps > 0, got 0"):
        dbscan(d, 0.0, 4)
    with pytest.raises(ValueError, match="dbscan: expected eps > 0, got -1"):
        dbscan(d, -1.0, 4)
    with pytest.raises(ValueError, match="dbscan: expected min_samples to be an integer >= 1, got 0"):
        dbscan(d, 0.5, 0)
    with pytest.raises(
        ValueError, match=r"dbscan: expected distances to be a square \[N, N\] matrix, got shape \(8, 7\)"
    ):
        dbscan(d[:, :7], 0.5, 4)
    with pytest.raises(
        ValueError, match="dbscan: expected distances as a dense square tensor or a torch sparse CSR"
    ):
        dbscan(d.to_sparse_coo(), 0.5, 4)
    with pytest.raises(ValueError, match="dbscan: distances hold NaN"):
        dbscan(torch.where(d > 1, float("nan"), d), 0.5, 4)
    with pytest.raises(ValueError, match="dbscan: distances hold negative values"):
        dbscan(-d, 0.5, 4)
    # the op's own errors are in op_samples.ERROR_SAMPLES


def test_jaccard_graph_matches_sklearn() -> None:
    # A realistic graph: the classic Jaccard distance of synthetic identities (eps 0.6 as on SYSU).
    from uvireid_ext.reference.classic_jaccard import classic_jaccard

    g = torch.Generator().manual_seed(3)
    protos = torch.nn.functional.normalize(torch.randn(15, 64, generator=g), dim=1)
    pid = torch.randint(0, 15, (300,), generator=g)
    x = torch.nn.functional.normalize(protos[pid] + 0.12 * torch.randn(300, 64, generator=g), dim=1)
    d = torch.from_numpy(classic_jaccard(x.numpy(), 30, 6))
    for eps in (0.6, 0.3):
        sparse = to_csr(d, eps, True)  # what jaccard_distance(max_distance=eps) hands over
        labels = dbscan(sparse, eps, 4)
        check_against_sklearn(d, labels, eps, 4)
        assert int(labels.max()) >= 5

