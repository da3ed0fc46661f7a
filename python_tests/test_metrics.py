"""The label-stage diagnostics: majority identities of clusters, the precision of cluster matches, and the
modality mixing of a feature space against a brute-force reference written here."""

from __future__ import annotations

import math

import pytest
import torch

from uvireid_ext.cluster import joint_cross_stats
from uvireid_ext.metrics import majority_identity, match_precision, modality_mixing


def test_majority_identity_ties_outliers_and_empty_clusters():
    labels = torch.tensor([0, 0, 0, 1, 1, -1, -1, 3])
    truth = torch.tensor([7, 7, 2, 5, 4, 9, 9, 1])
    # cluster 1 ties 5/4 → the lower id; cluster 2 is empty; outliers never vote
    assert majority_identity(labels, truth, 4).tolist() == [7, 4, -1, 1]
    assert majority_identity(torch.full((3,), -1), torch.arange(3), 2).tolist() == [-1, -1]


def test_match_precision_counts_agreeing_pairs():
    major_v = torch.tensor([3, 5, 8])
    major_r = torch.tensor([5, 3, 9])
    pairs = torch.tensor([[0, 1], [1, 0], [2, 2]])
    assert match_precision(pairs, major_v, major_r) == 2 / 3
    assert math.isnan(match_precision(torch.zeros(0, 2, dtype=torch.int64), major_v, major_r))


def test_joint_cross_stats():
    # joint 0: visible id 1 + infrared id 1 (right); joint 1: visible id 2 + infrared id 3 (wrong);
    # joint 2: visible only (not cross-modality)
    joint = torch.tensor([0, 0, 1, 1, 2, -1])
    visible = torch.tensor([True, False, True, False, True, False])
    pid = torch.tensor([1, 1, 2, 3, 4, 5])
    assert joint_cross_stats(joint, visible, pid) == {"clusters_joint_cross": 2, "joint_cross_precision": 0.5}


def reference_mixing(x, is_ir, pid, k):
    """Full float64 distance matrix, stable sorts: ties go to the lower index, self is left out."""
    x = x.double()
    n = x.shape[0]
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    kk = min(k, n - 1)
    share, hits, counted = 0, 0, 0
    for i in range(n):
        order = [j for j in torch.sort(d[i], stable=True).indices.tolist() if j != i][:kk]
        share += sum(bool(is_ir[j]) != bool(is_ir[i]) for j in order)
        other = [j for j in torch.sort(d[i], stable=True).indices.tolist() if bool(is_ir[j]) != bool(is_ir[i])]
        if int(pid[i]) >= 0 and any(int(pid[j]) == int(pid[i]) for j in other):
            counted += 1
            hits += int(pid[other[0]]) == int(pid[i])
    return {"cross_share": share / (n * kk), "cross_nn_precision": hits / counted if counted else math.nan,
            "k": float(kk)}


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key], abs=1e-12), key


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 40])
def test_modality_mixing_matches_reference(seed, k):
    g = torch.Generator().manual_seed(seed)
    n = 37
    x = torch.randn(n, 6, generator=g)
    is_ir = torch.rand(n, generator=g) < 0.35
    pid = torch.randint(-1, 6, (n,), generator=g)  # -1: unknown identity, never counted
    x[5] = x[2]  # duplicate rows: self need not rank first
    x[9] = x[2]
    _same(modality_mixing(x, is_ir, pid, k=k, chunk=4), reference_mixing(x, is_ir, pid, k))
    _same(modality_mixing(x, is_ir, pid, k=k), reference_mixing(x, is_ir, pid, k))


def test_modality_mixing_ties_go_to_the_lower_index_across_chunks():
    # visible rows 0 and 4 are the same point, in different chunks of 2, with different identities
    x = torch.tensor([[0.0, 0], [5, 5], [6, 6], [7, 7], [0, 0], [0.1, 0]])
    is_ir = torch.tensor([False, False, False, False, False, True])
    pid = torch.tensor([1, 2, 3, 4, 9, 9])
    got = modality_mixing(x, is_ir, pid, k=2, chunk=2)
    _same(got, reference_mixing(x, is_ir, pid, 2))
    # infrared row 5 (id 9) → the tie of visible 0 (id 1) and 4 (id 9) goes to 0: wrong; visible 4 → row 5:
    # right; the other visible identities are not in the infrared set and are not counted
    assert got["cross_nn_precision"] == 0.5


def test_modality_mixing_edges_and_bad_input():
    x = torch.randn(4, 3)
    one = modality_mixing(x, torch.zeros(4, dtype=torch.bool), torch.arange(4))
    assert math.isnan(one["cross_share"]) and math.isnan(one["cross_nn_precision"])
    assert math.isnan(modality_mixing(x[:1], torch.tensor([True]), torch.tensor([0]))["cross_share"])
    # identities that the other modality does not hold: precision undefined, the share still counts
    none = modality_mixing(x, torch.tensor([True, True, False, False]), torch.tensor([0, 1, 2, 3]), k=3)
    assert math.isnan(none["cross_nn_precision"]) and none["cross_share"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="modality_mixing: expected features"):
        modality_mixing(x, torch.zeros(3, dtype=torch.bool), torch.arange(4))
    with pytest.raises(ValueError, match="modality_mixing: k and chunk must be >= 1, got k=0"):
        modality_mixing(x, torch.zeros(4, dtype=torch.bool), torch.arange(4), k=0)
    with pytest.raises(ValueError, match="modality_mixing: is_ir must be a bool tensor .* got torch.int64"):
        modality_mixing(x, torch.tensor([1, 2, 1, 2]), torch.arange(4))  # modality codes, not a mask
    x[2, 1] = math.nan
    with pytest.raises(ValueError, match="modality_mixing: features row 2 is not finite"):
        modality_mixing(x, torch.tensor([True, False, True, False]), torch.arange(4))
