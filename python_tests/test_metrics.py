"""The label-stage diagnostics: majority identities of clusters and the precision of cluster matches."""

from __future__ import annotations

import math

import torch

from uvireid_ext.cluster import joint_cross_stats
from uvireid_ext.metrics import majority_identity, match_precision


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
