"""segmented_kmeans op: agrees with the reference, is a k-means fixed point, deterministic in the
seed, handles small/empty clusters and noise as documented, rejects bad input."""

from __future__ import annotations

import pytest
import torch
from common import DEVICES

from uvireid_ext import reference
from uvireid_ext.ops.cluster import segmented_kmeans


def blobs(num_clusters: int, per: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, per * 2, (num_clusters,), generator=g)
    labels = torch.repeat_interleave(torch.arange(num_clusters), sizes)
    labels = labels[torch.randperm(labels.numel(), generator=g)]  # members interleaved in index order
    x = torch.randn(labels.numel(), dim, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    noise = torch.rand(labels.numel(), generator=g) < 0.1
    return x, torch.where(noise, -1, labels)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(device: str, seed: int) -> None:
    x, labels = blobs(12, 10, 16, seed)
    centers, assign = segmented_kmeans(x.to(device), labels.to(device), 4, num_clusters=13, seed=seed)
    assert centers.shape == (13, 4, 16) and assign.shape == labels.shape
    rc, ra = reference.segmented_kmeans(x, labels, 13, 4, 300, 1e-6, seed)
    torch.testing.assert_close(centers.cpu(), rc, atol=1e-5, rtol=1e-5)
    assert torch.equal(assign.cpu(), ra)
    # Noise keeps -1; cluster 12 has no member: zero centres.
    assert torch.equal(assign.cpu() < 0, labels < 0)
    assert torch.count_nonzero(centers[12]) == 0


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


def test_empty_and_opcheck_compile() -> None:
    centers, assign = segmented_kmeans(
        torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64), 4, num_clusters=0
    )
    assert centers.shape == (0, 4, 5) and assign.shape == (0,)
    x, labels = blobs(5, 6, 4, 0)
    args = (x, labels, int(labels.max()) + 1, 3, 50, 1e-6, 0)
    torch.library.opcheck(torch.ops.uvireid_ext.segmented_kmeans.default, args)
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
    raw = torch.ops.uvireid_ext.segmented_kmeans
    with pytest.raises(
        RuntimeError, match=r"segmented_kmeans: labels must lie in \[-1, num_clusters\) = \[-1, 2\)"
    ):
        raw(x, labels, 2, 4, 10, 1e-6, 0)
    with pytest.raises(RuntimeError, match="segmented_kmeans: expected x of dtype float32, got float64"):
        raw(x.double(), labels, 3, 4, 10, 1e-6, 0)
    with pytest.raises(RuntimeError, match="segmented_kmeans: expected labels.size\\(0\\) == "):
        raw(x, labels[1:], 3, 4, 10, 1e-6, 0)
    with pytest.raises(RuntimeError, match="segmented_kmeans: expected max_iter >= 0, got -1"):
        raw(x, labels, 3, 4, -1, 1e-6, 0)
    with pytest.raises(RuntimeError, match="segmented_kmeans: expected tol >= 0"):
        raw(x, labels, 3, 4, 10, -1.0, 0)
