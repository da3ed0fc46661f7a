"""kNN, k-reciprocal encoding, query expansion and Jaccard distance.

The ops pass the encoding V between them as CSR triples (crow [N+1] int64, col [nnz] int64,
val [nnz] float32); the wrappers here take and return ``torch.sparse_csr_tensor`` where a matrix is
meant. ``jaccard_distance`` runs the whole pipeline from features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from . import finite_rows, has_schema, op, register_fake, sparse_csr, unique_rank_rows

__all__ = ["knn", "k_reciprocal_encode", "query_expansion", "jaccard", "jaccard_distance"]

Expansion = Literal["plain", "modality", "emcc"]
Candidates = Literal["bf16", "fp64"]

for _name in ("knn", "k_reciprocal_encode"):
    if has_schema(_name):
        for _device in ("cpu", "cuda"):  # these ops are fp32: autocast hands them fp32 features
            torch.library.register_autocast(f"uvireid_ext::{_name}", _device, torch.float32)


def _features(fn: str, features: Tensor) -> Tensor:
    if not isinstance(features, Tensor):
        raise TypeError(f"{fn}: features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{fn}: expected 2-D features [N, D], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{fn}: expected floating point features, got {features.dtype}")
    x = features.detach().to(torch.float32).contiguous()
    finite_rows(fn, "features", x)
    return x


def _csr(m: Tensor, fn: str, arg: str) -> tuple[Tensor, Tensor, Tensor]:
    if m.layout != torch.sparse_csr or m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{fn}: {arg} must be a square torch.sparse_csr tensor, got {m.layout} {tuple(m.shape)}")
    return (
        m.crow_indices().to(torch.int64),
        m.col_indices().to(torch.int64),
        m.values().detach().to(torch.float32),
    )


def knn(features: Tensor, k: int, *, candidates: Candidates = "bf16") -> tuple[Tensor, Tensor]:
    """Exact k nearest rows of ``features`` by squared Euclidean distance, self included.

    Candidates come from a GEMM, blockwise (memory O(N·k + block·N), never N×N), and are re-measured
    exactly; an error bound proves per row that no other row belongs in its top k, and rows it cannot
    prove go to the next, more precise tier (``"bf16"`` → ``"fp64"`` → exact distances to every row).
    The result does not depend on ``candidates`` or on torch's float32 matmul precision setting.

    Args:
        features: [N, D] floating point (computed in float32; rows must be finite).
        k: neighbours per row, 1 <= k <= N.
        candidates: the first tier, ``"bf16"`` (bf16 inputs, float32 accumulation: tensor cores on
            GPU) or ``"fp64"``.

    Returns:
        indices [N, k] int64, ranked by distance, ties to the lower index;
        distances [N, k] float32, the exact squared distances (float64 sums, rounded).
    """
    if candidates not in ("bf16", "fp64"):
        raise ValueError(f"knn: candidates must be 'bf16' or 'fp64', got {candidates!r}")
    return op("knn")(_features("knn", features), k, candidates)


def k_reciprocal_encode(features: Tensor, rank: Tensor, k1: int, rank_dist: Tensor | None = None) -> Tensor:
    """k-reciprocal encoding V: softmax(-(2 - 2<x_i, x_j>)) over the expanded k-reciprocal set E_i.

    Args:
        features: [N, D] floating point, used as given (not renormalised).
        rank: [N, K >= k1] int64 kNN indices (``knn(features, K)[0]``); the first k1 columns are used,
            and must not repeat an index within a row.
        k1: reciprocal-neighbour size (the classic 30).
        rank_dist: [N, K] float32 squared distances of ``rank`` (``knn(features, K)[1]``), optional:
            with them the dot products of ranked pairs need not be recomputed from the features.

    Returns:
        [N, N] float32 ``torch.sparse_csr`` tensor, each row summing to 1, columns sorted.
    """
    x = _features("k_reciprocal_encode", features)
    unique_rank_rows("k_reciprocal_encode", rank, k1)
    return sparse_csr(*op("k_reciprocal_encode")(x, rank, rank_dist, k1))


def query_expansion(
    v: Tensor, rank: Tensor, pool: int, cap: int | None = None, outer: Tensor | None = None,
    inner: Tensor | None = None,
) -> Tensor:
    """Local query expansion of the encoding ``v`` over each row's first ``pool`` ranked neighbours.

    Of those neighbours at most ``cap`` per (outer, inner) group are kept in rank order; V rows are
    averaged per group, groups with equal weight within each outer id, then outer ids with equal
    weight. Plain k2 expansion: ``pool=k2``; modality-balanced: ``outer=modality``; EMCC:
    ``pool=k3, cap=k2, outer=modality, inner=camera``.

    Args:
        v: [N, N] float32 ``torch.sparse_csr`` encoding.
        rank: [N, K >= pool] int64 kNN indices; the first ``pool`` columns must not repeat an index
            within a row.
        pool: neighbours considered (self included).
        cap: most neighbours kept per group (default: no cap).
        outer, inner: [N] integer group ids (default: one group).

    Returns:
        [N, N] float32 ``torch.sparse_csr`` tensor.
    """
    crow, col, val = _csr(v, "query_expansion", "v")
    unique_rank_rows("query_expansion", rank, pool)
    n = crow.numel() - 1
    zeros = torch.zeros(n, dtype=torch.int64, device=crow.device)
    outer = zeros if outer is None else _ids("query_expansion", "outer", outer, n, crow.device)
    inner = zeros if inner is None else _ids("query_expansion", "inner", inner, n, crow.device)
    return sparse_csr(*op("query_expansion")(crow, col, val, rank, outer, inner, pool, pool if cap is None else cap))


def jaccard(v: Tensor, max_distance: float | None = None) -> Tensor:
    """Jaccard distance of the rows of ``v``: d = 1 - m/(2 - m), m = sum_c min(V_ic, V_jc), >= 0.

    Args:
        v: [N, N] float32 ``torch.sparse_csr`` encoding whose rows sum to 1.
        max_distance: None for the dense matrix; else keep only pairs with d <= max_distance.

    Returns:
        dense [N, N] float32 (pairs sharing no column at 1), or a ``torch.sparse_csr`` [N, N] float32
        tensor holding every pair with d <= max_distance and the whole diagonal, columns sorted.
    """
    crow, col, val = _csr(v, "jaccard", "v")
    if max_distance is None:
        return op("jaccard_dense")(crow, col, val)
    return sparse_csr(*op("jaccard_sparse")(crow, col, val, float(max_distance)))


def _ids(fn: str, arg: str, ids: Tensor, n: int, device: torch.device) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.numel() != n:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"{fn}: {arg} must be a 1-D tensor of length N = {n}, got {shape}")
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{fn}: {arg} must hold integer ids, got {ids.dtype}")
    if ids.device != device:
        raise ValueError(f"{fn}: {arg} is on {ids.device} but features are on {device}")
    return ids.to(torch.int64).contiguous()


def jaccard_distance(
    features: Tensor,
    k1: int = 30,
    k2: int = 6,
    *,
    modality: Tensor | None = None,
    camera: Tensor | None = None,
    expansion: Expansion = "plain",
    k3: int | None = None,
    max_distance: float | None = None,
) -> Tensor:
    """Jaccard distance of k-reciprocal encodings, the clustering distance of cluster-contrast,
    ADCA, PGM and MMM, with the plain, modality-balanced or EMCC query expansion.

    Args:
        features: [N, D] floating point features, used as given (not renormalised).
        k1: k-reciprocal neighbourhood, 1 <= k1 < N.
        k2: "plain"/"modality": query-expansion neighbours, with the classic code's semantics at every
            value: each row becomes the mean over its first min(k1, k2) ranked rows (the classic rank
            list has only k1 columns, self included), and k2 = 1 skips the expansion (a row keeps its
            own encoding, even when a lower-index duplicate ranks first). "emcc": the cap per group,
            where k2 = 1 keeps the best-ranked row of each group (it is a cap, not a count, so there
            is no skip).
        modality: [N] integer modality ids; required by "modality", optional for "emcc" (one
            modality: groups by camera only).
        camera: [N] integer camera ids; required by "emcc".
        expansion: "plain" | "modality" | "emcc".
        k3: "emcc" only: neighbours considered before the per-group cap (default k1), k3 < N; it may
            exceed k1 (the neighbour search then goes to k3).
        max_distance: None for a dense result; else a sparse result with the pairs d <= max_distance.

    Returns:
        dense [N, N] float32, or a ``torch.sparse_csr`` [N, N] float32 tensor (diagonal included).
    """
    fn = "jaccard_distance"
    x = _features(fn, features)
    n = x.shape[0]
    if expansion not in ("plain", "modality", "emcc"):
        raise ValueError(f"{fn}: expansion must be 'plain', 'modality' or 'emcc', got {expansion!r}")
    for name, value in (("k1", k1), ("k2", k2)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{fn}: {name} must be an int >= 1, got {value!r}")
    if k3 is not None and expansion != "emcc":
        raise ValueError(f"{fn}: k3 applies to expansion='emcc' only, got k3={k3} with {expansion!r}")
    if max_distance is not None and not max_distance >= 0:
        raise ValueError(f"{fn}: max_distance must be >= 0, got {max_distance}")
    zeros = torch.zeros(n, dtype=torch.int64, device=x.device)
    mod = None if modality is None else _ids(fn, "modality", modality, n, x.device)
    cam = None if camera is None else _ids(fn, "camera", camera, n, x.device)
    # classic (plain, modality): rank lists of k1 columns, so at most k1 rows expand; k2 = 1 skips
    expand = expansion == "emcc" or k2 != 1
    if expansion == "plain":
        pool = cap = min(k1, k2)
        outer = inner = zeros
    elif expansion == "modality":
        if mod is None:
            raise ValueError(f"{fn}: expansion='modality' needs modality ids")
        pool = cap = min(k1, k2)
        outer, inner = mod, zeros
    else:
        if cam is None:
            raise ValueError(f"{fn}: expansion='emcc' needs camera ids")
        pool = k1 if k3 is None else k3
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"{fn}: k3 must be an int >= 1, got {k3!r}")
        cap, outer, inner = k2, zeros if mod is None else mod, cam
    if n == 0:
        if max_distance is None:
            return torch.zeros(0, 0, dtype=torch.float32, device=x.device)
        return sparse_csr(zeros.new_zeros(1), zeros, zeros.to(torch.float32))
    if k1 >= n:
        raise ValueError(f"{fn}: k1 = {k1} must be smaller than the number of samples N = {n}")
    if pool >= n:
        which = "k3" if expansion == "emcc" else "k2"
        raise ValueError(f"{fn}: {which} = {pool} must be smaller than the number of samples N = {n}")
    rank, rank_dist = op("knn")(x, max(k1, pool))
    crow, col, val = op("k_reciprocal_encode")(x, rank, rank_dist, k1)
    if expand:
        crow, col, val = op("query_expansion")(crow, col, val, rank, outer, inner, pool, cap)
    if max_distance is None:
        return op("jaccard_dense")(crow, col, val)
    return sparse_csr(*op("jaccard_sparse")(crow, col, val, float(max_distance)))


# ------------------------------------------------------------------------------ fake kernels


def _nnz_fake(crow: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (
        crow.new_empty(crow.shape, dtype=torch.int64),
        crow.new_empty((nnz,), dtype=torch.int64),
        crow.new_empty((nnz,), dtype=torch.float32),
    )


@register_fake("knn")
def _knn_fake(x: Tensor, k: int, candidates: str = "bf16") -> tuple[Tensor, Tensor]:
    torch._check(x.dim() == 2, lambda: f"knn: expected 2-D features, got {x.dim()}-D")
    n = x.shape[0]
    return x.new_empty((n, k), dtype=torch.int64), x.new_empty((n, k), dtype=torch.float32)


@register_fake("k_reciprocal_encode")
def _krecip_fake(x: Tensor, rank: Tensor, rank_dist: Tensor | None, k1: int) -> tuple[Tensor, Tensor, Tensor]:
    return _nnz_fake(x.new_empty((x.shape[0] + 1,), dtype=torch.int64))


@register_fake("query_expansion")
def _qe_fake(
    crow: Tensor, col: Tensor, val: Tensor, rank: Tensor, outer: Tensor, inner: Tensor, pool: int, cap: int
) -> tuple[Tensor, Tensor, Tensor]:
    return _nnz_fake(crow)


@register_fake("jaccard_dense")
def _jaccard_dense_fake(crow: Tensor, col: Tensor, val: Tensor) -> Tensor:
    n = crow.shape[0] - 1
    return val.new_empty((n, n), dtype=torch.float32)


@register_fake("jaccard_sparse")
def _jaccard_sparse_fake(crow: Tensor, col: Tensor, val: Tensor, max_distance: float) -> tuple[Tensor, Tensor, Tensor]:
    return _nnz_fake(crow)
