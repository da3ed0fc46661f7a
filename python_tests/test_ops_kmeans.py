"""segmented_kmeans beyond the sample registry (test_ops_registry.py): a k-means fixed point,
deterministic in the seed, small clusters as documented, the wrapper's checks, torch.compile, the
partition independent of the features' scale."""

from __future__ import annotations

import math

import pytest
import torch
from op_samples import blobs

import uvireid_ext.reference as R
from uvireid_ext.ops.cluster import segmented_kmeans


def test_fixed_point_and_small_clusters() -> None:
    x, labels = blobs(20, 12, 8, 5)
    centers, assign = segmented_kmeans(x, labels, 3)
    for c in range(int(labels.max()) + 1):
        idx = (labels == c).nonzero().flatten()
        pts, cen = x[idx], centers[c]
        if idx.numel() < 3:  # documented: n copies of the mean, everyone on sub-centre 0
            torch.testing.assert_close(cen, pts.mean(0).expand(3, -1))
            assert (assign[idx] == 0).all()
            continue
        # Converged: every point is on its nearest centre, every used centre is its members' mean.
        assert torch.equal(assign[idx], torch.cdist(pts, cen).argmin(1))
        for k in range(3):
            if (assign[idx] == k).any():
                torch.testing.assert_close(cen[k], pts[assign[idx] == k].mean(0), atol=1e-5, rtol=1e-5)


def test_deterministic_and_seed_dependent() -> None:
    x, labels = blobs(10, 15, 8, 3)
    a = segmented_kmeans(x, labels, 4, seed=7)
    b = segmented_kmeans(x, labels, 4, seed=7)
    c = segmented_kmeans(x, labels, 4, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_iteration_cap_and_duplicates() -> None:
    x, labels = blobs(6, 20, 4, 4)
    # max_iter=0: centres are the seeds themselves (members of the cluster).
    centers, _ = segmented_kmeans(x, labels, 2, max_iter=0)
    for c in range(6):
        pts = x[labels == c]
        if pts.shape[0] >= 2:
            assert (torch.cdist(centers[c], pts).min(1).values < 1e-6).all()
    # Identical members: all D^2 weights vanish, seeding still picks members; no NaN.
    same = torch.ones(6, 3)
    centers, assign = segmented_kmeans(same, torch.zeros(6, dtype=torch.int64), 4)
    assert torch.equal(centers, torch.ones(1, 4, 3)) and (assign == 0).all()


def test_compile() -> None:
    x, labels = blobs(5, 6, 4, 0)
    args = (x, labels, int(labels.max()) + 1, 3, 50, 1e-6, 0)
    fn = torch.compile(
        lambda a, b: segmented_kmeans(a, b, 3, num_clusters=args[2], max_iter=50)[0] * 2, fullgraph=True
    )
    torch.testing.assert_close(fn(x, labels), segmented_kmeans(x, labels, 3, max_iter=50)[0] * 2)


def test_bad_input() -> None:
    x, labels = blobs(3, 5, 4, 0)
    with pytest.raises(ValueError, match=r"segmented_kmeans: expected labels of shape \[\d+\], got \(3,\)"):
        segmented_kmeans(x, labels[:3])
    with pytest.raises(ValueError, match="segmented_kmeans: expected x to be a 2-D"):
        segmented_kmeans(x[0], labels)
    with pytest.raises(ValueError, match="segmented_kmeans: expected n >= 1, got 0"):
        segmented_kmeans(x, labels, 0)


@pytest.mark.parametrize("scale", [2.0**-100, 1e-40, 1e-30, 1e-20, 1e20, 1e30, 2.0**100])
def test_partition_does_not_depend_on_scale(scale: float) -> None:
    # Before the wrapper's power-of-two rescale, x·1e-30 underflowed every squared distance to 0 (all
    # points on sub-centre 0) and x·1e20 overflowed them (clusters split 15/2/2/2).
    x, labels = blobs(3, 10, 8, 0)
    centres, assign = segmented_kmeans(x, labels, 4)
    scaled = (x.double() * scale).float()
    c2, a2 = segmented_kmeans(scaled, labels, 4)
    assert torch.equal(a2, assign)
    assert torch.isfinite(c2).all()
    if math.frexp(scale)[0] == 0.5 and scale > 1e-37:  # an exact power of two, no subnormals: exact
        assert torch.equal(c2, (centres.double() * scale).float())
    else:
        torch.testing.assert_close(c2.double() / scale, centres.double(), rtol=1e-5, atol=1e-5)  # subnormal inputs
    rc, ra = R.segmented_kmeans(scaled, labels, int(labels.max()) + 1, 4, 300, 1e-6, 0)
    assert torch.equal(ra, a2)  # the reference rescales alike; its means sum in another order
    torch.testing.assert_close(rc.double() / scale, c2.double() / scale, rtol=1e-5, atol=1e-5)


def test_refuses_non_finite_rows_grad_and_float_labels() -> None:
    x, labels = blobs(3, 5, 4, 0)
    for bad in (float("inf"), float("-inf"), float("nan")):
        y = x.clone()
        y[6, 2] = bad
        with pytest.raises(ValueError, match=r"segmented_kmeans: x row 6 is not finite \(NaN or Inf\)"):
            segmented_kmeans(y, labels)
    with pytest.raises(TypeError, match="segmented_kmeans: labels must hold integer ids, got dtype torch.float32"):
        segmented_kmeans(x, labels.float() * 0.9)
    with pytest.raises(TypeError, match="segmented_kmeans: num_clusters must be an integer, got 3.0"):
        segmented_kmeans(x, labels, num_clusters=3.0)
    xg = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="segmented_kmeans: x requires grad, but no gradient flows"):
        segmented_kmeans(xg, labels)
    with torch.no_grad():
        assert torch.equal(segmented_kmeans(xg, labels)[1], segmented_kmeans(x, labels)[1])
    with pytest.raises(ValueError, match=r"segmented_kmeans: num_clusters = 1099511627776 needs an output of"):
        segmented_kmeans(x, labels, num_clusters=2**40)
