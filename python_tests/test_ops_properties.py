"""Property-based tests (hypothesis) of every op against its plain reference (uvireid_ext.reference):
random shapes with 0 and 1 rows, float32 and float64 where an op takes both, magnitudes from 1e-30 to
1e30, ties and duplicate rows, non-contiguous inputs. Each property is either the reference's result
(with the tolerances of op_samples.py; magnitudes divided out where the result scales with the
input) or a named error whose condition the test states. ``derandomize=True``: every run (CI
included) draws the same examples. CPU only: the CUDA kernels are compared with the same references
by test_ops_registry.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_samples import (
    KNN_TOL,
    MMD_TOL,
    Sample,
    check_dbscan,
    check_jaccard_dense,
    check_jaccard_sparse,
    check_knn,
    check_memory_update,
    check_query_expansion,
    check_segment_reduce,
    csr_of,
    parts,
)

import uvireid_ext as U
import uvireid_ext.reference as R
from uvireid_ext.ops import op
from uvireid_ext.ops.cluster import dbscan, dbscan_csr, segmented_kmeans
from uvireid_ext.ops.memory import memory_update_, segment_reduce
from uvireid_ext.ops.mmd import MIN_BANDWIDTH, mmd2

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

SETTINGS = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SCALES = [1e-30, 1e-20, 1e-8, 1.0, 3.0, 1e8, 1e20, 1e30]
BOTH = (torch.float32, torch.float64)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values, contiguous, as every other column of a wider tensor, or column-major."""
    if layout == "strided":
        wide = torch.zeros(x.shape[0], 2 * x.shape[1], dtype=x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout == "transposed":
        return x.t().contiguous().t()
    return x


@st.composite
def matrices(draw: st.DrawFn, max_rows: int = 20, max_cols: int = 6, min_rows: int = 0,
             dtypes: tuple = BOTH, scales: list[float] = SCALES, cols: int | None = None) -> tuple[torch.Tensor, float]:
    """(x [N, D], its magnitude): normal rows, integer grid rows (many equal distances) or repeated
    rows (ties at distance 0), in any layout; D = ``cols`` when given."""
    n = draw(st.integers(min_rows, max_rows))
    d = cols if cols is not None else draw(st.integers(1, max_cols))
    dtype, scale = draw(st.sampled_from(dtypes)), draw(st.sampled_from(scales))
    kind = draw(st.sampled_from(["normal", "grid", "repeats"]))
    g = _generator(draw(st.integers(0, 2**20)))
    if kind == "grid":
        x = torch.randint(-2, 3, (n, d), generator=g).double()
    else:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if kind == "repeats" and n > 1:
        x[n // 2 :] = x[: n - n // 2].clone()
    x = (x * scale).to(dtype)
    return _layout(x, draw(st.sampled_from(["contiguous", "strided", "transposed"]))), scale


def _ids(draw: st.DrawFn, n: int, low: int, high: int) -> torch.Tensor:
    """[n] int64 ids in [low, high), possibly as a non-contiguous view."""
    ids = torch.tensor(draw(st.lists(st.integers(low, high - 1), min_size=n, max_size=n)), dtype=torch.int64)
    return torch.stack([ids, ids]).t()[:, 0] if draw(st.booleans()) else ids


# ---------------------------------------------------------------------------------- distance ops


@SETTINGS
@given(data=matrices(), k=st.integers(1, 8), candidates=st.sampled_from(["bf16", "fp64"]))
def test_knn(data: tuple, k: int, candidates: str) -> None:
    x, _ = data
    n = x.shape[0]
    if 0 < n < k:
        with pytest.raises(RuntimeError, match=f"knn: k = {k} exceeds the number of rows N = {n}"):
            U.knn(x, k, candidates=candidates)
        return
    out = U.knn(x, k, candidates=candidates)
    check_knn((x.float(), k), out, Sample("property", lambda d: (), tol=dict(rtol=KNN_TOL["rtol"], atol=0)))


@SETTINGS
@given(data=matrices(min_rows=1), k1=st.integers(1, 8), extra=st.integers(0, 3), ranked=st.booleans())
def test_k_reciprocal_encode(data: tuple, k1: int, extra: int, ranked: bool) -> None:
    x, _ = data
    x = x.float()
    n = x.shape[0]
    k1 = min(k1, n)
    rank, dist = U.knn(x, min(k1 + extra, n)) if ranked else (R.knn(x, min(k1 + extra, n))[0], None)
    v = U.k_reciprocal_encode(x, rank, k1, dist).to_dense().double()
    ref = R.k_reciprocal_encode(x, rank, k1)
    torch.testing.assert_close(v, ref, rtol=1e-6, atol=1e-7)  # op_samples.check_k_reciprocal_encode's
    # The same support, but for weights that underflow float32: features far from unit norm give
    # softmax weights like exp(-100), which the float64 reference keeps and the float32 op rounds to 0.
    assert not ((v != 0) & (ref == 0)).any()
    assert (ref[(v == 0) & (ref != 0)] < torch.finfo(torch.float32).tiny).all()
    sums = v.sum(1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))


def _encoding(draw: st.DrawFn, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, rank): the k-reciprocal encoding of random unit-ish rows, and their rank list."""
    x, _ = draw(matrices(min_rows=min_rows, dtypes=(torch.float32,), scales=[1.0]))
    n = x.shape[0]
    rank = R.knn(x, min(n, draw(st.integers(1, 8))))[0]
    return U.k_reciprocal_encode(x, rank, rank.shape[1]), rank


@SETTINGS
@given(st.data())
def test_query_expansion(data: st.DataObject) -> None:
    v, rank = _encoding(data.draw)
    n, width = rank.shape
    pool = data.draw(st.integers(1, width))
    cap = data.draw(st.integers(1, pool))
    outer, inner = _ids(data.draw, n, 0, 2), _ids(data.draw, n, 0, 3)
    out = U.query_expansion(v, rank, pool, cap, outer, inner)
    args = (*parts(v), rank, outer, inner, pool, cap)
    check_query_expansion(args, parts(out), Sample("property", lambda d: ()))


@st.composite
def probability_rows(draw: st.DrawFn) -> torch.Tensor:
    """[N, N] sparse CSR rows that sum to 1 (or are empty), weights quantised so that minima tie."""
    n = draw(st.integers(0, 16))
    g = _generator(draw(st.integers(0, 2**20)))
    keep = torch.rand(n, n, generator=g) < draw(st.sampled_from([0.1, 0.3, 0.8]))
    w = torch.randint(1, 5, (n, n), generator=g).double() * keep
    sums = w.sum(1, keepdim=True)
    v = torch.where(sums > 0, w / sums.clamp_min(1), 0).float()
    return v.to_sparse_csr()


@SETTINGS
@given(v=probability_rows(), max_distance=st.sampled_from([None, 0.0, 0.3, 0.7, 1.0]))
def test_jaccard(v: torch.Tensor, max_distance: float | None) -> None:
    sample = Sample("property", lambda d: ())
    dense = U.jaccard(v)
    check_jaccard_dense(parts(v), dense, sample)
    if max_distance is not None:
        check_jaccard_sparse((*parts(v), max_distance), parts(U.jaccard(v, max_distance)), sample)


# -------------------------------------------------------------------------------- clustering ops


@SETTINGS
@given(n=st.integers(0, 24), seed=st.integers(0, 2**20), dup=st.integers(0, 3), dtype=st.sampled_from(BOTH),
       scale=st.sampled_from(SCALES), eps=st.sampled_from([0.1, 0.2, 0.35]), min_samples=st.integers(1, 5),
       transposed=st.booleans())
def test_dbscan(n: int, seed: int, dup: int, dtype: torch.dtype, scale: float, eps: float, min_samples: int,
                transposed: bool) -> None:
    from op_samples import random_distances

    d = (random_distances(n, seed, dup=min(dup, n // 2)).double() * scale).to(dtype)
    d = d.t().contiguous().t() if transposed else d  # symmetric: the same matrix, column-major
    eps = eps * scale
    crow, col, val = parts(csr_of(d, float("inf")))
    labels = dbscan(d, eps, min_samples)
    check_dbscan((crow, col, val, eps, min_samples), labels, Sample("property", lambda x: ()))
    assert torch.equal(dbscan_csr(crow, col, val, eps, min_samples), labels)
    assert torch.equal(dbscan(csr_of(d, float("inf")), eps, min_samples), labels)


@SETTINGS
@given(data=matrices(max_rows=24, dtypes=(torch.float32,)), st_data=st.data())
def test_segmented_kmeans(data: tuple, st_data: st.DataObject) -> None:
    x, scale = data
    draw = st_data.draw
    clusters = draw(st.integers(0, 4))
    labels = _ids(draw, x.shape[0], -1, max(clusters, 1)) if clusters else torch.full((x.shape[0],), -1)
    n, max_iter, seed = draw(st.integers(1, 4)), draw(st.sampled_from([0, 1, 5, 300])), draw(st.integers(0, 99))
    centres, assign = segmented_kmeans(x, labels, n, num_clusters=clusters, max_iter=max_iter, seed=seed)
    rc, ra = R.segmented_kmeans(x, labels, clusters, n, max_iter, 1e-6, seed)
    assert centres.shape == (clusters, n, x.shape[1]) and torch.equal(assign, ra)
    torch.testing.assert_close(centres.double() / scale, rc.double() / scale, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(data=matrices(max_rows=4, dtypes=(torch.float64,)))
def test_segmented_kmeans_float64_is_named(data: tuple) -> None:
    x, _ = data
    with pytest.raises(RuntimeError, match="segmented_kmeans: expected x of dtype float32, got float64"):
        segmented_kmeans(x, torch.zeros(x.shape[0], dtype=torch.int64), 1, num_clusters=1)


# ----------------------------------------------------------------------------------- memory ops


@SETTINGS
@given(data=matrices(max_rows=24), st_data=st.data())
def test_memory_update(data: tuple, st_data: st.DataObject) -> None:
    x, _ = data
    draw = st_data.draw
    rows = draw(st.integers(1, 5))
    memory = torch.nn.functional.normalize(torch.randn(rows, x.shape[1], generator=_generator(rows),
                                                       dtype=torch.float64), dim=1).to(x.dtype)
    labels = _ids(draw, x.shape[0], -1, rows)
    momentum, hard = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])), draw(st.booleans())
    out = memory.clone()
    memory_update_(out, x, labels, momentum, hard)
    check_memory_update((memory, x, labels, momentum, hard), out, Sample("property", lambda d: ()))


@SETTINGS
@given(data=matrices(max_rows=24), st_data=st.data())
def test_segment_reduce(data: tuple, st_data: st.DataObject) -> None:
    x, scale = data
    draw = st_data.draw
    segments = draw(st.integers(0, 5))
    seg = _ids(draw, x.shape[0], -1, max(segments, 1)) if segments else torch.full((x.shape[0],), -1)
    mode, normalize = draw(st.sampled_from(["mean", "weighted_mean", "weighted_sum_by_count"])), draw(st.booleans())
    w = None
    if mode != "mean" or draw(st.booleans()):
        w = torch.rand(x.shape[0], generator=_generator(x.shape[0]), dtype=torch.float64)
        w[w < 0.2] = 0.0  # zero weights, and zero weight sums
        w = w.to(x.dtype)
    unit = 1.0 if normalize else scale  # un-normalised centroids scale with x
    xg = x.detach().clone().requires_grad_(x.dtype == torch.float64)
    out = segment_reduce(xg, seg, segments, w, mode, normalize)
    check_segment_reduce((x / unit, seg, w, segments, mode, normalize), out.detach() / unit,
                         Sample("property", lambda d: ()))
    if xg.requires_grad and x.shape[0]:  # gradients: those of autograd through the reference
        probe = torch.randn(segments, x.shape[1], generator=_generator(3), dtype=x.dtype)
        (got,) = torch.autograd.grad((out * probe).sum(), xg)
        xr = x.detach().clone().requires_grad_()
        ref = (R.segment_reduce(xr, seg, segments, w, mode, normalize) * probe).sum()
        (want,) = torch.autograd.grad(ref, xr) if ref.requires_grad else (torch.zeros_like(x),)  # no segment
        torch.testing.assert_close(got * unit, want * unit)


# ------------------------------------------------------------------------------------------ mmd2


@SETTINGS
@given(data=matrices(max_rows=12), st_data=st.data())
def test_mmd2(data: tuple, st_data: st.DataObject) -> None:
    x, scale = data
    draw = st_data.draw
    dtype = x.dtype
    y, _ = draw(matrices(max_rows=12, dtypes=(dtype,), scales=[scale], cols=x.shape[1]))
    groups = draw(st.integers(1, 3)) if x.shape[0] + y.shape[0] else 0
    xg, yg = _ids(draw, x.shape[0], 0, max(groups, 1)), _ids(draw, y.shape[0], 0, max(groups, 1))
    given_bw = draw(st.booleans())
    bw = (torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64) * scale**2).to(dtype) if given_bw else None
    args = (x, y, xg, yg, groups, bw, 2.0, 5)
    ref_values, ref_valid, ref_bw = R.mmd2(*args)
    if bw is not None and bool((bw < MIN_BANDWIDTH).any()):  # x·1e-8 and below
        with pytest.raises(ValueError, match=f"mmd2: expected bandwidths >= {MIN_BANDWIDTH:g}"):
            mmd2(*args)
        return
    if bw is not None and not bool(torch.isfinite(bw).all()):  # float32, x·1e19 and above
        with pytest.raises(RuntimeError, match="mmd2: expected bandwidths > 0 and finite"):
            mmd2(*args)
        return
    if bw is None and not bool(torch.isfinite(ref_bw[ref_valid]).all()):  # float32 beyond ~1e19
        with pytest.raises(ValueError, match="mmd2: the data-driven bandwidths of group"):
            mmd2(*args)
        return
    xr = x.detach().clone().requires_grad_()
    out = mmd2(xr, y, xg, yg, groups, bw, 2.0, 5)
    tol = MMD_TOL[dtype]
    torch.testing.assert_close(out.values.detach(), ref_values, **tol)
    assert torch.equal(out.valid, ref_valid)
    torch.testing.assert_close(out.bandwidths.double() / scale**2, ref_bw.double() / scale**2, **tol)
    if groups:  # the backward op against autograd through the reference, gradients scaled by 1/x
        grad = torch.randn(groups, generator=_generator(groups), dtype=dtype)
        gx, gy = op("_mmd2_backward")(grad, x.contiguous(), y.contiguous(), xg.contiguous(), yg.contiguous(),
                                      out.bandwidths)
        rx, ry = R._mmd2_backward(grad, x, y, xg, yg, out.bandwidths)
        torch.testing.assert_close(gx * scale, rx * scale, **tol)
        torch.testing.assert_close(gy * scale, ry * scale, **tol)
        (auto,) = torch.autograd.grad((out.values * grad).sum(), xr)
        torch.testing.assert_close(auto, gx)
