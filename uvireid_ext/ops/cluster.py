"""DBSCAN on (sparse) precomputed distances and segmented k-means: typed wrappers and fake kernels.

Semantics shared by the CPU and CUDA kernels (documented in full in ``csrc/kernels/cluster.cuh``):

* ``dbscan`` gives scikit-learn's ``DBSCAN(metric="precomputed")`` core points and clusters on the
  same matrix (symmetric distances); a point always counts as its own neighbour (zero diagonal);
  a border point joins the cluster of its nearest core neighbour (ties to the lower index), where
  scikit-learn picks whichever cluster reaches it first; noise is -1; cluster ids are renumbered
  0..C-1 in order of first appearance.
* ``segmented_kmeans`` runs an independent k-means with ``n`` sub-centres inside every cluster,
  seeded k-means++-style from ``seed`` (deterministic), until no assignment changes, the summed
  squared centre shift is <= ``tol`` or ``max_iter`` updates. Clusters with fewer than ``n`` (but
  at least one) members get ``n`` copies of their mean; clusters without members get zero centres.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import check_output_fits, finite_rows, int_arg, int_ids, op, register_fake

__all__ = ["dbscan", "dbscan_csr", "segmented_kmeans"]


def _to_csr(distances: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(crow, col, val) of a square sparse CSR tensor, or the off-diagonal entries <= eps of a dense one."""
    if not isinstance(distances, Tensor):
        raise ValueError(f"dbscan: expected distances to be a tensor, got {type(distances).__name__}")
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(
            f"dbscan: expected distances to be a square [N, N] matrix, got shape {tuple(distances.shape)}"
        )
    if distances.layout == torch.sparse_csr:
        return (
            distances.crow_indices().to(torch.int64).contiguous(),
            distances.col_indices().to(torch.int64).contiguous(),
            distances.values().contiguous(),
        )
    if distances.layout != torch.strided:
        raise ValueError(
            "dbscan: expected distances as a dense square tensor or a torch sparse CSR tensor, "
            f"got layout {distances.layout}"
        )
    if distances.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dbscan: expected float32 or float64 distances, got dtype {distances.dtype}")
    if bool(torch.isnan(distances).any()):
        raise ValueError("dbscan: distances hold NaN")
    if bool((distances < 0).any()):
        raise ValueError("dbscan: distances hold negative values")
    keep = distances <= eps
    keep.fill_diagonal_(False)  # the point itself always counts; the kernel adds it
    rows, cols = keep.nonzero(as_tuple=True)
    crow = torch.zeros(distances.shape[0] + 1, dtype=torch.int64, device=distances.device)
    crow[1:] = torch.bincount(rows, minlength=distances.shape[0]).cumsum(0)
    return crow, cols.contiguous(), distances[rows, cols].contiguous()


def dbscan(distances: Tensor, eps: float, min_samples: int = 4) -> Tensor:
    """DBSCAN labels of N points from their pairwise distances.

    Args:
        distances: [N, N] float32/float64, either a torch sparse CSR tensor (entries with d > eps
            are ignored; missing entries are "far"; the diagonal need not be stored) or a dense
            tensor (its diagonal is treated as 0, as scikit-learn does for a zero-diagonal matrix).
        eps: neighbourhood radius, > 0; d <= eps is a neighbour (inclusive, as in scikit-learn).
        min_samples: neighbours (the point itself included) that make a core point, >= 1.

    Returns:
        [N] int64 labels on the distances' device: 0..C-1 by first appearance, -1 for noise.
    """
    eps, min_samples = _check_scalars(eps, min_samples)
    crow, col, val = _to_csr(distances, eps)
    return dbscan_csr(crow, col, val, eps, min_samples)


def dbscan_csr(crow: Tensor, col: Tensor, val: Tensor, eps: float, min_samples: int = 4) -> Tensor:
    """DBSCAN on raw CSR arrays: crow [N+1] int64, col [nnz] int64, val [nnz] float32/float64.

    Column indices must be unique within a row. Returns [N] int64 labels (see :func:`dbscan`).
    """
    eps, min_samples = _check_scalars(eps, min_samples)
    for name, t in (("crow", crow), ("col", col), ("val", val)):
        if not isinstance(t, Tensor) or t.dim() != 1:
            raise ValueError(
                f"dbscan: expected {name} to be a 1-D tensor, got {getattr(t, 'shape', type(t))}"
            )
    if col.device != crow.device or val.device != crow.device:
        raise ValueError(
            f"dbscan: crow, col and val must share a device, got {crow.device}, {col.device}, {val.device}"
        )
    return op("dbscan")(crow, col, val, eps, min_samples)


def _check_scalars(eps: float, min_samples: int) -> tuple[float, int]:
    if not eps > 0:
        raise ValueError(f"dbscan: expected eps > 0, got {eps}")
    if isinstance(min_samples, bool) or int(min_samples) != min_samples or min_samples < 1:
        raise ValueError(f"dbscan: expected min_samples to be an integer >= 1, got {min_samples}")
    return float(eps), int(min_samples)


def segmented_kmeans(
    x: Tensor,
    labels: Tensor,
    n: int = 4,
    *,
    num_clusters: int | None = None,
    max_iter: int = 300,
    tol: float = 1e-6,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``n`` k-means sub-centres inside every cluster, all clusters in one call.

    Args:
        x: [N, D] float32 features, finite (a NaN or Inf row is refused); no gradient flows through
            the centres, so a ``x`` that requires grad is refused while grad mode is on.
        labels: [N] integer cluster ids in [-1, C); -1 (noise) is ignored.
        n: sub-centres per cluster (MMM uses 4).
        num_clusters: C; default ``labels.max() + 1`` (a device sync on CUDA).
        max_iter: cap on Lloyd updates per cluster.
        tol: stop a cluster when the summed squared shift of its centres is <= tol · s², s the power
            of two nearest the largest row norm (s = 1 for unit rows, where tol is absolute).
        seed: seeding draws come from a counter-based hash of (seed, cluster, step).

    The kernel runs on x / s (exact: s is a power of two), so the partition does not depend on the
    features' scale: squared distances neither underflow (x·1e-40) nor overflow (x·1e30) float32.

    Returns:
        (centres [C, n, D] float32, sub-centre index of every point [N] int64, -1 for noise).
    """
    fn = "segmented_kmeans"
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{fn}: expected x to be a 2-D [N, D] tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != x.shape[0]:
        got = tuple(getattr(labels, "shape", ()))
        raise ValueError(f"{fn}: expected labels of shape [{x.shape[0]}], got {got}")
    if labels.device != x.device:
        raise ValueError(f"{fn}: labels on {labels.device} but x on {x.device}")
    int_ids(fn, "labels", labels)
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{fn}: x requires grad, but no gradient flows through the centres; pass x.detach()")
    n, max_iter, seed = int_arg(fn, "n", n), int_arg(fn, "max_iter", max_iter), int_arg(fn, "seed", seed)
    if num_clusters is None:
        num_clusters = int(labels.max()) + 1 if labels.numel() else 0
    num_clusters = int_arg(fn, "num_clusters", num_clusters)
    if n < 1:
        raise ValueError(f"{fn}: expected n >= 1, got {n}")
    check_output_fits(fn, "num_clusters", num_clusters, n * x.shape[1] * 4 + 8, x.device)
    finite_rows(fn, "x", x)
    x = x.contiguous()
    scale = _pow2_scale(x) if x.dtype == torch.float32 and x.shape[0] else None
    centres, assign = op(fn)(
        x if scale is None else (x.double() * torch.exp2(-scale)).float(),
        labels.to(torch.int64).contiguous(),
        num_clusters,
        n,
        max_iter,
        float(tol),
        seed,
    )
    return (centres if scale is None else (centres.double() * torch.exp2(scale)).float()), assign


def _pow2_scale(x: Tensor) -> Tensor:
    """log2 of s, the power of two with the largest row norm of ``x`` in [s/√2, s√2) (0 for zeros),
    as a 0-d float64 tensor: no host sync, and scaling float32 data by 2^±k in float64 is exact."""
    top = x.double().norm(dim=1).max() * math.sqrt(2.0)
    return torch.where(top > 0, torch.frexp(top).exponent - 1, 0).double()


@register_fake("dbscan")
def _dbscan_fake(crow: Tensor, col: Tensor, val: Tensor, eps: float, min_samples: int) -> Tensor:
    return crow.new_empty(crow.shape[0] - 1, dtype=torch.int64)


@register_fake("segmented_kmeans")
def _segmented_kmeans_fake(
    x: Tensor, labels: Tensor, num_clusters: int, n: int, max_iter: int, tol: float, seed: int
) -> tuple[Tensor, Tensor]:
    return x.new_empty(num_clusters, n, x.shape[1]), labels.new_empty(labels.shape[0])
