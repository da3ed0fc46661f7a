"""The sample-input registry of the ops: per op, named inputs (ordinary, ties, duplicates, empty,
N = 1, extreme values) and the check of the op's output against its plain reference
(uvireid_ext.reference). test_ops_registry.py feeds every sample to the correctness check, to
torch.library.opcheck and, for ops with autograd, to the gradient checks; ERROR_SAMPLES holds bad
inputs with the named error each must raise. The data makers are shared with the per-op tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import EMULATED

import uvireid_ext.reference as R
from uvireid_ext.ops import op

Args = tuple
Check = Callable[[Args, object], None]

# ------------------------------------------------------------------------------------- data makers


def clustered(n: int, d: int, clusters: int, noise: float = 0.6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + noise * torch.randn(n, d, generator=g)
    return F.normalize(x, dim=1)


def with_duplicates(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[5] = x[7]
    x[9] = x[7]
    x[20:26] = x[3]  # six copies of one row: ties at distance 0
    return x


DUPLICATE_ROWS = {3, 5, 7, 9, *range(20, 26)}  # the rows with_duplicates ties


def grid_points(n: int) -> torch.Tensor:
    """Integer grid points: many exactly equal distances between distinct rows."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 3, (n, 4), generator=g).float()


def near_duplicates(n: int = 160, d: int = 64, spread: float = 1e-3) -> torch.Tensor:
    """Tight groups: distances within a group (~1e-6) far below the bf16 tier's error bound (~1e-2),
    so that tier proves no row and the fp64 tier has to."""
    g = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(4, d, generator=g), dim=1)
    return centres[torch.arange(n) % 4] + spread * torch.randn(n, d, generator=g)


def expansion_modes(n: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(pool, cap, outer, inner): plain, modality-balanced, EMCC, EMCC within one modality."""
    g = torch.Generator().manual_seed(3)
    modality = torch.randint(0, 2, (n,), generator=g)
    camera = torch.randint(0, 3, (n,), generator=g) + 3 * modality
    zeros = torch.zeros(n, dtype=torch.int64)
    return [(6, 6, zeros, zeros), (12, 12, modality, zeros), (20, 3, modality, camera), (15, 2, zeros, camera)]


def random_distances(n: int, seed: int, quantum: float = 0.05, dup: int = 0) -> torch.Tensor:
    """Symmetric zero-diagonal distances of 2-D points; quantised so that d == eps ties occur."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2
    if dup:  # exact duplicates: distance 0 off the diagonal
        pts[n - dup :] = pts[:dup]
    d = torch.round(torch.cdist(pts, pts) / quantum) * quantum
    d.fill_diagonal_(0)
    return d.float()


def csr_of(d: torch.Tensor, max_distance: float, keep_diagonal: bool = True) -> torch.Tensor:
    """The entries of dense distances d within max_distance, as torch.sparse_csr."""
    keep = d <= max_distance
    if not keep_diagonal:
        keep.fill_diagonal_(False)
    rows, cols = keep.nonzero(as_tuple=True)
    crow = torch.zeros(d.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=d.shape[0]).cumsum(0)
    return torch.sparse_csr_tensor(crow, cols, d[rows, cols], size=d.shape)


def parts(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(crow, col, val) of a CSR tensor, as the ops take them."""
    return m.crow_indices().clone(), m.col_indices().clone(), m.values().clone()


def dense_of(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    n = crow.numel() - 1
    return torch.sparse_csr_tensor(crow.cpu(), col.cpu(), val.cpu(), size=(n, n)).to_dense()


def blobs(num_clusters: int, per: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows with cluster labels of random sizes, members interleaved, 10 % noise (-1)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, per * 2, (num_clusters,), generator=g)
    labels = torch.repeat_interleave(torch.arange(num_clusters), sizes)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = F.normalize(torch.randn(labels.numel(), dim, generator=g), dim=1)
    noise = torch.rand(labels.numel(), generator=g) < 0.1
    return x, torch.where(noise, -1, labels)


def memory_inputs(rows: int, batch: int, dim: int, dtype: torch.dtype = torch.float32, noise: bool = True,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(memory [rows, D] unit rows, features [batch, D], labels [batch] with 20 % skipped)."""
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(rows, dim, dtype=dtype, generator=g), dim=1)
    x = torch.randn(batch, dim, dtype=dtype, generator=g)
    labels = torch.randint(0, rows, (batch,), generator=g)
    if noise:
        labels[torch.rand(batch, generator=g) < 0.2] = -1
    return memory, x, labels


def mmd_groups(nx: int, ny: int, groups: int, dtype: torch.dtype = torch.float64, dim: int = 6,
               seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x, y, x_groups, y_groups): random set sizes per group, y shifted from x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(nx, dim, dtype=dtype, generator=g)
    y = torch.randn(ny, dim, dtype=dtype, generator=g) + 0.3
    return x, y, torch.randint(0, groups, (nx,), generator=g), torch.randint(0, groups, (ny,), generator=g)


def on(device: str, *ts: object) -> tuple:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in ts)


# --------------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Sample:
    """One input of an op. make(device) gives its positional arguments on that device; extra(args,
    out) adds the sample's own assertions to the op's check; opcheck is off for the large samples
    (it runs the op many times); gradcheck marks float64 samples whose numerical gradient is the
    op's (no data-driven constant in between)."""

    id: str
    make: Callable[[str], Args]
    tol: dict = dataclasses.field(default_factory=dict)
    extra: Check | None = None
    opcheck: bool = True
    gradcheck: bool = False


@dataclasses.dataclass(frozen=True)
class OpEntry:
    samples: list[Sample]
    check: Callable[[Args, object, Sample], None]  # the op's output against the reference


REGISTRY: dict[str, OpEntry] = {}


def register(name: str, samples: list[Sample]) -> Callable:
    def wrap(check: Callable[[Args, object, Sample], None]) -> Callable:
        REGISTRY[name] = OpEntry(samples, check)
        return check

    return wrap


# ---- knn

KNN_TOL = dict(rtol=1e-6, atol=1e-6)


def _knn_sample(id: str, x: Callable[[], torch.Tensor], k: int, candidates: str, **kw: object) -> Sample:
    return Sample(f"{id}-k{k}-{candidates}", lambda device: (x().to(device), k, candidates), **kw)


def _knn_whole_rows(args: Args, out: object) -> None:
    # 80 copies of row 0: no GEMM bound separates the ties, the exact ranking of whole rows must
    assert torch.equal(out[0][0].cpu(), torch.cat([torch.tensor([0]), torch.arange(100, 129)]))


def _copies(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[100:180] = x[0]
    return x


def _straddling(n: int) -> torch.Tensor:
    """Duplicates across the CPU's row blocks (1,024 rows each at N = 4,000), D >= 2 x candidates: the
    symmetric tier, whose later blocks get their first columns from earlier blocks' products. (The
    emulated CUDA twin takes 1000 rows: it has no CPU tier.)"""
    x = clustered(n, 72, n // 20, noise=0.5)
    x[n - 100 : n - 80] = x[10]
    x[n * 3 // 8] = x[n * 5 // 8]
    return x


_KNN_EXTREMES = {  # rows the bf16 bound cannot settle: exact ranking all the same
    "tight": lambda: near_duplicates(),
    "tighter": lambda: near_duplicates(spread=1e-6),
    "tiny": lambda: clustered(120, 24, 6) * 1e-25,
    "subnormal": lambda: clustered(120, 24, 6) * 1e-40,
    "huge": lambda: clustered(120, 24, 6) * 1e18,
    "overflowing-gemm": lambda: clustered(120, 24, 6) * 3e37,
    "near-max": lambda: clustered(120, 24, 6) * 1.5e38,
}

KNN_SAMPLES = [
    *[
        _knn_sample(name, make, k, cand, tol=KNN_TOL, opcheck=k == 7)
        for name, make in (
            ("clustered", lambda: clustered(150, 24, 8)),
            ("duplicates", lambda: with_duplicates(clustered(150, 24, 8))),
            ("grid-ties", lambda: grid_points(120)),
        )
        for cand in ("bf16", "fp64")
        for k in (1, 7, 40)
    ],
    *[_knn_sample("unprovable-copies", lambda: _copies(clustered(200, 16, 5)), 30, c, tol=KNN_TOL,
                  extra=_knn_whole_rows, opcheck=False) for c in ("bf16", "fp64")],
    *[_knn_sample(name, make, 12, c, tol=dict(rtol=1e-6, atol=0), opcheck=False)
      for name, make in _KNN_EXTREMES.items() for c in ("bf16", "fp64")],
    *[_knn_sample("block-straddling", lambda: _straddling(1000 if EMULATED else 4000), 10, c, tol=KNN_TOL,
                  opcheck=False) for c in ("bf16", "fp64")],
    *[_knn_sample("empty", lambda: torch.zeros(0, 5), 3, c) for c in ("bf16", "fp64")],
    *[_knn_sample("one-row", lambda: torch.ones(1, 5), 1, c) for c in ("bf16", "fp64")],
    *[_knn_sample("k-equals-n", lambda: clustered(10, 3, 2), 10, c) for c in ("bf16", "fp64")],
]


@register("knn", KNN_SAMPLES)
def check_knn(args: Args, out: object, sample: Sample) -> None:
    x, k = args[0], args[1]
    idx, dist = out
    ridx, rdist = R.knn(x.cpu(), k)
    assert idx.dtype == torch.int64 and idx.shape == (x.shape[0], k) and dist.shape == (x.shape[0], k)
    assert torch.equal(idx.cpu(), ridx)
    torch.testing.assert_close(dist.cpu(), rdist, **(sample.tol or dict(rtol=0, atol=0)))


# ---- k_reciprocal_encode


def _encode_args(x: Callable[[], torch.Tensor], k1: int, ranked: bool) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        xd = x().to(device)
        if ranked:  # knn's distances: dot products of ranked pairs come from them
            rank, dist = op("knn")(xd, max(k1, 25))
            return xd, rank, dist, k1
        rank, _ = R.knn(xd.cpu(), max(k1, 25))
        return xd, rank.to(device), None, k1

    return make


def _unique_rows_sum_to_one(args: Args, out: object) -> None:
    sums = dense_of(*out).sum(1)
    unique = [i for i in range(args[0].shape[0]) if i not in DUPLICATE_ROWS]
    assert torch.all((sums[unique] - 1).abs() < 1e-5)


def _scaled_row(x: torch.Tensor) -> torch.Tensor:
    x[40] *= 3.0  # a row beyond the unit-norm range: its pairs fall back to direct dot products
    return x


ENCODE_SAMPLES = [
    *[Sample(f"duplicates-k1-{k1}", _encode_args(lambda: with_duplicates(clustered(120, 16, 6)), k1, False),
             tol=dict(rtol=1e-6, atol=1e-7), extra=_unique_rows_sum_to_one, opcheck=k1 == 7) for k1 in (1, 5, 7, 20)],
    Sample("ranked-distances", _encode_args(lambda: _scaled_row(with_duplicates(clustered(120, 16, 6))), 20, True),
           tol=dict(rtol=1e-5, atol=1e-6)),
    Sample("one-row", lambda device: (torch.ones(1, 4, device=device), torch.zeros(1, 1, dtype=torch.int64,
                                                                                   device=device), None, 1)),
]


@register("k_reciprocal_encode", ENCODE_SAMPLES)
def check_k_reciprocal_encode(args: Args, out: object, sample: Sample) -> None:
    x, rank, _, k1 = args
    v = dense_of(*out).double()
    ref = R.k_reciprocal_encode(x.cpu(), rank.cpu(), k1)
    torch.testing.assert_close(v, ref, **(sample.tol or dict(rtol=1e-6, atol=1e-7)))
    assert ((v != 0) == (ref != 0)).all()  # the same support, entry by entry
    # a row sums to 1, or is empty: a row with more than k1 - 1 exact duplicates of lower index does
    # not rank itself in its first k1 (ties go to the lower index), so its reciprocal set is empty
    sums = v.sum(1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))


# ---- query_expansion


def _expansion_args(mode: int, n: int = 120) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        x = with_duplicates(clustered(n, 16, 6))
        pool, cap, outer, inner = expansion_modes(n)[mode]
        rank, _ = R.knn(x, 25)
        crow, col, val = op("k_reciprocal_encode")(x.to(device), rank.to(device), None, 20)
        return crow, col, val, rank.to(device), outer.to(device), inner.to(device), pool, cap

    return make


def _rows_sum_to_one(args: Args, out: object) -> None:
    torch.testing.assert_close(dense_of(*out).sum(1), torch.ones(args[0].numel() - 1), rtol=1e-5, atol=1e-5)


QUERY_EXPANSION_SAMPLES = [
    Sample(name, _expansion_args(mode), extra=_rows_sum_to_one)
    for mode, name in enumerate(("plain", "modality", "emcc", "emcc-one-modality"))
]


@register("query_expansion", QUERY_EXPANSION_SAMPLES)
def check_query_expansion(args: Args, out: object, sample: Sample) -> None:
    crow, col, val, rank, outer, inner, pool, cap = args
    ref = R.query_expansion(dense_of(crow, col, val).double(), rank.cpu(), outer.cpu(), inner.cpu(), pool, cap)
    torch.testing.assert_close(dense_of(*out).double(), ref, rtol=1e-6, atol=1e-7)


# ---- jaccard_dense, jaccard_sparse


def _expanded(device: str, n: int = 150) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = with_duplicates(clustered(n, 16, 6)).to(device)
    rank, _ = op("knn")(x, 20)
    z = torch.zeros(n, dtype=torch.int64, device=device)
    return op("query_expansion")(*op("k_reciprocal_encode")(x, rank, None, 20), rank, z, z, 6, 6)


def _disjoint(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row 2 empty (it shares nothing, not even with itself: d = 1); rows 0 and 1 share nothing."""
    v = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0.5, 0, 0.5]]).to_sparse_csr()
    return on(device, *parts(v))


def _disjoint_exact(args: Args, out: object) -> None:
    want = torch.tensor([[0, 1, 1, 1], [1, 0, 1, 1 - 0.5 / 1.5], [1, 1, 1, 1], [1, 1 - 0.5 / 1.5, 1, 0]])
    assert torch.equal(out.cpu(), want)


def _one(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return on(device, torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1.0]))


def _none(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return on(device, torch.tensor([0]), torch.zeros(0, dtype=torch.int64), torch.zeros(0))


JACCARD_INPUTS = {"expanded": _expanded, "disjoint": _disjoint, "one-row": _one, "empty": _none}

JACCARD_DENSE_SAMPLES = [
    Sample(name, make, extra=_disjoint_exact if name == "disjoint" else None) for name, make in JACCARD_INPUTS.items()
]


@register("jaccard_dense", JACCARD_DENSE_SAMPLES)
def check_jaccard_dense(args: Args, out: object, sample: Sample) -> None:
    ref = R.jaccard_dense(dense_of(*args).double())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out, out.T)


def _disjoint_pairs(args: Args, out: object) -> None:
    assert set(csr_pairs(*out)) == {(0, 0), (1, 1), (2, 2), (3, 3), (1, 3), (3, 1)}


JACCARD_SPARSE_SAMPLES = [
    *[Sample(f"expanded-{md}", lambda device, md=md: (*_expanded(device), md)) for md in (0.0, 0.3, 0.6, 1.0)],
    Sample("disjoint-0.9", lambda device: (*_disjoint(device), 0.9), extra=_disjoint_pairs),
    Sample("one-row-0.5", lambda device: (*_one(device), 0.5)),
    Sample("empty-0.5", lambda device: (*_none(device), 0.5)),
]


def csr_pairs(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> dict[tuple[int, int], float]:
    crow, col, val = crow.cpu(), col.cpu(), val.cpu()
    rows = range(len(crow) - 1)
    return {(i, int(col[p])): float(val[p]) for i in rows for p in range(int(crow[i]), int(crow[i + 1]))}


@register("jaccard_sparse", JACCARD_SPARSE_SAMPLES)
def check_jaccard_sparse(args: Args, out: object, sample: Sample) -> None:
    *v, max_distance = args
    d = op("jaccard_dense")(*v).cpu()
    check_jaccard_dense(tuple(v), d, sample)
    pairs = csr_pairs(*out)
    want = {tuple(p) for p in torch.nonzero(d <= max_distance).tolist()} | {(i, i) for i in range(d.shape[0])}
    assert set(pairs) == want  # every pair within max_distance, and the diagonal, nothing else
    assert all(d[i, j].item() == val for (i, j), val in pairs.items())  # the same float as dense
    crow = out[0].cpu()
    assert all(torch.all(out[1].cpu()[crow[i] : crow[i + 1]].diff() > 0) for i in range(d.shape[0]))  # sorted rows


# ---- dbscan


def _dbscan_random(seed: int, min_samples: int, keep_diagonal: bool) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        d = random_distances(60, seed, dup=4 if seed % 2 else 0)
        return (*on(device, *parts(csr_of(d, 0.35, keep_diagonal))), 0.2, min_samples)

    return make


def _dbscan_dense(d: torch.Tensor, eps: float, min_samples: int) -> Callable[[str], Args]:
    return lambda device: (*on(device, *parts(csr_of(d, float("inf")))), eps, min_samples)


def cliques() -> torch.Tensor:
    """0 is a border point between core cliques {1..4} and {5..8}; it is nearer to 6."""
    d = torch.full((9, 9), 9.0)
    d.fill_diagonal_(0)
    for clique in ([1, 2, 3, 4], [5, 6, 7, 8]):
        for a in clique:
            for b in clique:
                if a != b:
                    d[a, b] = 0.1
    d[0, 1] = d[1, 0] = 0.3
    d[0, 6] = d[6, 0] = 0.2
    return d


def _labels_are(want: list[int]) -> Check:
    def extra(args: Args, out: object) -> None:
        assert out.tolist() == want

    return extra


_TRIANGLE = torch.tensor([[0, 0.5, 0.5, 2], [0.5, 0, 0.5, 2], [0.5, 0.5, 0, 2], [2, 2, 2, 0]], dtype=torch.float64)


def _isolated(min_samples: int) -> Callable[[str], Args]:
    """No stored entries at all: noise, or singletons with min_samples = 1."""
    return lambda device: (*on(device, torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                torch.zeros(0)), 0.5, min_samples)


def _chain(device: str) -> Args:
    """Points 0..n-1 on a line, each within eps of its neighbours: the union-find tree is a long path
    (the worst case of the final compression pass); all points form one cluster."""
    x = torch.arange(2000, dtype=torch.float64)[:, None]
    d = (x - x.T).abs()
    return (*on(device, *parts(csr_of(d, 1.0))), 1.0, 2)


DBSCAN_SAMPLES = [
    *[Sample(f"random-seed{seed}-min{ms}-{'diag' if diag else 'nodiag'}", _dbscan_random(seed, ms, diag),
             opcheck=seed == 1 and ms == 3)
      for seed in range(6) for ms in (1, 3, 5) for diag in (True, False)],
    Sample("float64-eps-tie", _dbscan_dense(_TRIANGLE, 0.5, 3), extra=_labels_are([0, 0, 0, -1])),  # d == eps counts
    Sample("float64-below-tie", _dbscan_dense(_TRIANGLE, 0.49, 3), extra=_labels_are([-1, -1, -1, -1])),
    Sample("border-rule", _dbscan_dense(cliques(), 0.35, 4), extra=_labels_are([0, 1, 1, 1, 1, 0, 0, 0, 0])),
    Sample("empty", _dbscan_dense(torch.zeros(0, 0), 0.5, 4)),
    Sample("one-point-core", _dbscan_dense(torch.zeros(1, 1), 0.5, 1), extra=_labels_are([0])),
    Sample("one-point-noise", _dbscan_dense(torch.zeros(1, 1), 0.5, 2), extra=_labels_are([-1])),
    Sample("isolated-noise", _isolated(2), extra=_labels_are([-1, -1, -1])),
    Sample("isolated-singletons", _isolated(1), extra=_labels_are([0, 1, 2])),
    Sample("identical", _dbscan_dense(torch.zeros(5, 5), 0.1, 4), extra=_labels_are([0] * 5)),
    Sample("long-chain", _chain, extra=_labels_are([0] * 2000), opcheck=False),
]


@register("dbscan", DBSCAN_SAMPLES)
def check_dbscan(args: Args, out: object, sample: Sample) -> None:
    crow, col, val, eps, min_samples = args
    assert out.dtype == torch.int64 and out.device == crow.device
    assert torch.equal(out.cpu(), R.dbscan(crow.cpu(), col.cpu(), val.cpu(), eps, min_samples))


# ---- segmented_kmeans


def _kmeans_args(num_clusters: int, per: int, dim: int, seed: int, n: int, extra_clusters: int = 0,
                 max_iter: int = 300) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        x, labels = blobs(num_clusters, per, dim, seed)
        return (*on(device, x, labels), num_clusters + extra_clusters, n, max_iter, 1e-6, seed)

    return make


def _noise_and_empty_cluster(args: Args, out: object) -> None:
    centers, assign = out
    assert torch.equal(assign.cpu() < 0, args[1].cpu() < 0)  # noise keeps -1
    assert torch.count_nonzero(centers[args[2] - 1]) == 0  # the last cluster has no member: zero centres


def _identical(device: str) -> Args:
    """Identical members: all D^2 weights vanish, seeding still picks members; no NaN."""
    return (*on(device, torch.ones(6, 3), torch.zeros(6, dtype=torch.int64)), 1, 4, 300, 1e-6, 0)


def _ones_centres(args: Args, out: object) -> None:
    assert torch.equal(out[0].cpu(), torch.ones(1, 4, 3)) and (out[1] == 0).all()


KMEANS_SAMPLES = [
    *[Sample(f"blobs-seed{seed}", _kmeans_args(12, 10, 16, seed, 4, extra_clusters=1), tol=dict(atol=1e-5, rtol=1e-5),
             extra=_noise_and_empty_cluster, opcheck=seed == 0) for seed in (0, 1, 2)],
    Sample("small-clusters", _kmeans_args(20, 12, 8, 5, 3), tol=dict(atol=1e-5, rtol=1e-5)),
    Sample("no-iterations", _kmeans_args(6, 20, 4, 4, 2, max_iter=0), tol=dict(atol=1e-5, rtol=1e-5)),
    Sample("identical", _identical, extra=_ones_centres),
    Sample("empty", lambda device: (*on(device, torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64)), 0, 4, 300,
                                    1e-6, 0)),
]


@register("segmented_kmeans", KMEANS_SAMPLES)
def check_segmented_kmeans(args: Args, out: object, sample: Sample) -> None:
    x, labels, num_clusters, n, max_iter, tol, seed = args
    centers, assign = out
    assert centers.shape == (num_clusters, n, x.shape[1]) and assign.shape == labels.shape
    rc, ra = R.segmented_kmeans(x.cpu(), labels.cpu(), num_clusters, n, max_iter, tol, seed)
    torch.testing.assert_close(centers.cpu(), rc, **(sample.tol or dict(rtol=0, atol=0)))
    assert torch.equal(assign.cpu(), ra)


# ---- memory_update_ (in place: the check runs the op on a copy and the reference on another)


def _memory_args(momentum: float, hard: bool, dtype: torch.dtype) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        memory, x, labels = memory_inputs(7, 40, 33, dtype)  # rows < batch: many repeated labels
        return (*on(device, memory, x, labels), momentum, hard)

    return make


def _memory_edge(features: torch.Tensor, labels: list[int], momentum: float) -> Callable[[str], Args]:
    return lambda device: (*on(device, F.normalize(torch.randn(3, 5), dim=1), features, torch.tensor(labels,
                                                                                              dtype=torch.int64)),
                           momentum, False)


MEMORY_UPDATE_SAMPLES = [
    *[Sample(f"{'hard' if hard else 'all'}-m{m}-{str(dtype)[6:]}", _memory_args(m, hard, dtype),
             opcheck=dtype == torch.float32 and m in (0.0, 0.1))
      for m in (0.0, 0.1, 0.5, 1.0) for hard in (False, True) for dtype in (torch.float32, torch.float64)],
    Sample("empty-batch", _memory_edge(torch.zeros(0, 5), [], 0.2)),
    Sample("all-skipped", _memory_edge(torch.randn(2, 5), [-1, -1], 0.2)),
    Sample("zero-feature", _memory_edge(torch.zeros(1, 5), [1], 0.0)),  # a zero row, not NaN
]


def run_memory_update(args: Args) -> torch.Tensor:
    memory = args[0].clone()
    op("memory_update_")(memory, *args[1:])
    return memory


@register("memory_update_", MEMORY_UPDATE_SAMPLES)
def check_memory_update(args: Args, out: object, sample: Sample) -> None:
    memory, x, labels, momentum, hard = args
    ref = memory.cpu().clone()
    R.memory_update_(ref, x.cpu(), labels.cpu(), momentum, hard)
    torch.testing.assert_close(out.cpu(), ref)
    untouched = torch.ones(memory.shape[0], dtype=torch.bool)
    untouched[labels[labels >= 0].cpu()] = False
    assert torch.equal(out.cpu()[untouched], memory.cpu()[untouched])
    assert not out.isnan().any()


# ---- segment_reduce


def _segment_args(mode: str, normalize: bool, dtype: torch.dtype, weights: bool = True) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(50, 9, dtype=dtype, generator=g)
        seg = torch.randint(-1, 6, (50,), generator=g)
        seg[seg == 3] = -1  # an empty segment
        w = torch.rand(50, dtype=dtype, generator=g)
        w[seg == 4] = 0.0  # zero weight sum: the weighted mean gives a zero row, not NaN
        return (*on(device, x, seg), w.to(device) if weights else None, 7, mode, normalize)

    return make


def _segment_three_empty(args: Args, out: object) -> None:
    assert torch.equal(out[3].cpu(), torch.zeros(out.shape[1], dtype=out.dtype))


SEGMENT_REDUCE_SAMPLES = [
    *[Sample(f"{mode}-{'normalized' if norm else 'raw'}-{str(dtype)[6:]}", _segment_args(mode, norm, dtype),
             extra=_segment_three_empty, opcheck=dtype == torch.float32)
      for mode in ("mean", "weighted_mean", "weighted_sum_by_count") for norm in (False, True)
      for dtype in (torch.float64, torch.float32)],
    Sample("mean-without-weights", _segment_args("mean", False, torch.float64, weights=False),
           extra=_segment_three_empty),
    Sample("no-segments", lambda device: (*on(device, torch.randn(4, 3), torch.full((4,), -1)), None, 0, "mean",
                                          True)),
]


@register("segment_reduce", SEGMENT_REDUCE_SAMPLES)
def check_segment_reduce(args: Args, out: object, sample: Sample) -> None:
    x, seg, w, num_segments, mode, normalize = args
    ref = R.segment_reduce(x.cpu(), seg.cpu(), num_segments, None if w is None else w.cpu(), mode, normalize)
    torch.testing.assert_close(out.cpu(), ref)
    assert not out.isnan().any()


# ---- mmd2 and _mmd2_backward

MMD_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: {}}


def _mmd_args(given: bool, dtype: torch.dtype, nx: int = 23, ny: int = 17, groups: int = 5) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        x, y, xg, yg = mmd_groups(nx, ny, groups, dtype)
        xg[xg == groups - 1] = groups - 2  # the last group has no x rows: skipped
        bw = torch.tensor([0.5, 2.0, 8.0], dtype=dtype) if given else None
        return (*on(device, x, y, xg, yg), groups, None if bw is None else bw.to(device), 2.0, 5)

    return make


def _last_group_skipped(args: Args, out: object) -> None:
    values, valid, _ = out
    assert not bool(valid[-1]) and float(values[-1]) == 0.0 and torch.isfinite(values).all()


def _identical_points(device: str) -> Args:
    """Identical points: MMD² = 0 and finite gradients (the base bandwidth 0 is clamped)."""
    x = torch.ones(3, 4, dtype=torch.float64)
    return (*on(device, x, x.clone(), torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)), 1, None,
            2.0, 5)


def _zero_value(args: Args, out: object) -> None:
    assert float(out[0][0]) == 0.0


def _single_points(device: str) -> Args:
    """One point per side in group 1; groups 0 and 2 have neither side."""
    x, y = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    return (*on(device, x, y, torch.tensor([1]), torch.tensor([1])), 3, None, 2.0, 5)


def _only_middle_valid(args: Args, out: object) -> None:
    assert out[1].tolist() == [False, True, False] and float(out[0][1]) > 0


MMD2_SAMPLES = [
    *[Sample(f"{'given' if given else 'data-driven'}-{str(dtype)[6:]}", _mmd_args(given, dtype),
             tol=MMD_TOL[dtype], extra=_last_group_skipped, gradcheck=given and dtype == torch.float64)
      for given in (False, True) for dtype in (torch.float32, torch.float64)],
    Sample("given-small", _mmd_args(True, torch.float64, 9, 7, 3), gradcheck=True),
    Sample("identical-points", _identical_points, extra=_zero_value),
    Sample("single-points", _single_points, extra=_only_middle_valid),
    Sample("no-groups", lambda device: (*on(device, torch.randn(0, 4), torch.randn(0, 4),
                                            torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)),
                                        0, None, 2.0, 5)),
]


@register("mmd2", MMD2_SAMPLES)
def check_mmd2(args: Args, out: object, sample: Sample) -> None:
    values, valid, bws = R.mmd2(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
    torch.testing.assert_close(out[0].detach().cpu(), values.detach(), **sample.tol)
    assert torch.equal(out[1].cpu(), valid)
    torch.testing.assert_close(out[2].cpu(), bws, **sample.tol)
    assert out[2].shape == (args[4], args[6 + 1] if args[5] is None else args[5].numel())


def _backward_args(forward: Callable[[str], Args]) -> Callable[[str], Args]:
    def make(device: str) -> Args:
        x, y, xg, yg, groups, bw, mul, num = forward(device)
        used = op("mmd2")(x, y, xg, yg, groups, bw, mul, num)[2]
        grad = torch.randn(groups, dtype=x.dtype, generator=torch.Generator().manual_seed(1)).to(device)
        return grad, x, y, xg, yg, used

    return make


MMD2_BACKWARD_SAMPLES = [
    Sample(s.id, _backward_args(s.make), tol=s.tol) for s in MMD2_SAMPLES if s.id != "no-groups"
]


@register("_mmd2_backward", MMD2_BACKWARD_SAMPLES)
def check_mmd2_backward(args: Args, out: object, sample: Sample) -> None:
    gx, gy = R._mmd2_backward(*(a.cpu() for a in args))
    torch.testing.assert_close(out[0].cpu(), gx, **sample.tol)
    torch.testing.assert_close(out[1].cpu(), gy, **sample.tol)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()


def run(name: str, args: Args) -> object:
    """The op's output for a sample (memory_update_ on a copy of its memory)."""
    return run_memory_update(args) if name == "memory_update_" else op(name)(*args)


# ------------------------------------------------------------------------------- error samples


@dataclasses.dataclass(frozen=True)
class ErrorSample:
    """A bad input of an op (positional arguments from make(device)) and the named error it raises."""

    op: str
    id: str
    make: Callable[[str], Args]
    match: str
    error: type[Exception] = RuntimeError


def _knn_x(device: str) -> torch.Tensor:
    return clustered(10, 4, 2).to(device)


def _nan_row(device: str) -> torch.Tensor:
    x = _knn_x(device)
    x[4, 1] = float("nan")
    return x


def _encoded(device: str) -> tuple[torch.Tensor, torch.Tensor, tuple, torch.Tensor]:
    x = _knn_x(device)
    rank, _ = op("knn")(x, 4)
    crow, col, val = op("k_reciprocal_encode")(x, rank, None, 3)
    return x, rank, (crow, col, val), torch.zeros(10, dtype=torch.int64, device=device)


def _bad_rank(device: str) -> Args:
    x, rank, _, _ = _encoded(device)
    rank = rank.clone()
    rank[2, 1] = 10
    return x, rank, None, 3


def _bad_col(device: str) -> Args:
    _, rank, (crow, col, val), z = _encoded(device)
    col = col.clone()
    col[0] = 12
    return crow, col, val, rank, z, z, 2, 2


def _expansion(device: str, **change: object) -> Args:
    _, rank, (crow, col, val), z = _encoded(device)
    args = dict(crow=crow, col=col, val=val, rank=rank, outer=z, inner=z, pool=2, cap=2)
    args.update({k: (v(args) if callable(v) else v) for k, v in change.items()})
    return tuple(args.values())


def _dbscan(device: str, **change: object) -> Args:
    crow, col, val = on(device, *parts(csr_of(random_distances(60, 0), 0.6)))
    args = dict(crow=crow, col=col, val=val, eps=0.5, min_samples=4)
    args.update({k: (v(args) if callable(v) else v) for k, v in change.items()})
    return tuple(args.values())


def _duplicate_column(a: dict) -> torch.Tensor:
    col = a["col"].clone()
    col[1] = col[0]  # row 0 holds at least two entries (self and a neighbour at 0.6)
    return col


def _kmeans(device: str, **change: object) -> Args:
    x, labels = on(device, *blobs(3, 5, 4, 0))
    args = dict(x=x, labels=labels, num_clusters=3, n=4, max_iter=10, tol=1e-6, seed=0)
    args.update({k: (v(args) if callable(v) else v) for k, v in change.items()})
    return tuple(args.values())


def _memory(device: str, **change: object) -> Args:
    args = dict(memory=torch.randn(3, 4), features=torch.randn(2, 4), labels=torch.tensor([0, 1]), momentum=0.1,
                hard=False)
    args.update(change)
    if "memory" in change:
        args["features"] = torch.randn(2, change["memory"].shape[1])
    return on(device, *args.values())


def _segments(device: str, **change: object) -> Args:
    args = dict(x=torch.randn(4, 3), segments=torch.tensor([0, 1, 2, 0]), weights=None, num_segments=3, mode="mean",
                normalize=False)
    args.update(change)
    return on(device, *args.values())


def _mmd(device: str, **change: object) -> Args:
    args = dict(x=torch.randn(3, 4), y=torch.randn(2, 4), x_groups=torch.tensor([0, 1, 1]),
                y_groups=torch.tensor([0, 1]), num_groups=2, bandwidths=None, kernel_mul=2.0, kernel_num=5)
    args.update(change)
    return on(device, *args.values())


ERROR_SAMPLES = [
    # knn
    ErrorSample("knn", "k-above-n", lambda d: (_knn_x(d), 11, "bf16"), "knn: k = 11 exceeds the number of rows N = 10"),
    ErrorSample("knn", "k-zero", lambda d: (_knn_x(d), 0, "bf16"), "knn: k must be >= 1, got 0"),
    ErrorSample("knn", "3-d", lambda d: (_knn_x(d)[None], 2, "bf16"), "knn: expected features to be 2-D, got 3-D"),
    ErrorSample("knn", "float64", lambda d: (_knn_x(d).double(), 2, "bf16"),
                "knn: expected features of dtype float32, got float64"),
    ErrorSample("knn", "nan", lambda d: (_nan_row(d), 2, "bf16"), "knn: features row 4 is not finite"),
    ErrorSample("knn", "candidates", lambda d: (_knn_x(d), 2, "fp16"),
                "knn: candidates must be one of 'bf16', 'fp64', got 'fp16'"),
    # k_reciprocal_encode
    ErrorSample("k_reciprocal_encode", "rank-too-narrow", lambda d: (*_encoded(d)[:2], None, 5),
                "k_reciprocal_encode: rank has 4 columns but k1 = 5"),
    ErrorSample("k_reciprocal_encode", "rank-out-of-range", _bad_rank, "k_reciprocal_encode: rank holds index 10"),
    ErrorSample("k_reciprocal_encode", "rank-rows", lambda d: (_encoded(d)[0], _encoded(d)[1][:9], None, 3),
                r"k_reciprocal_encode: expected rank.size\(0\) == 10, got 9"),
    ErrorSample("k_reciprocal_encode", "nan", lambda d: (_nan_row(d), op("knn")(_knn_x(d), 4)[0], None, 3),
                "k_reciprocal_encode: features row 4 is not finite"),
    # query_expansion
    ErrorSample("query_expansion", "outer-length", lambda d: _expansion(d, outer=lambda a: a["outer"][:9]),
                r"query_expansion: expected outer.size\(0\) == 10, got 9"),
    ErrorSample("query_expansion", "pool-above-rank", lambda d: _expansion(d, pool=5),
                "query_expansion: rank has 4 columns but pool = 5"),
    ErrorSample("query_expansion", "cap-zero", lambda d: _expansion(d, cap=0),
                "query_expansion: cap must be >= 1, got 0"),
    ErrorSample("query_expansion", "col-out-of-range", _bad_col,
                r"query_expansion: col\[0\] = 12 is outside \[0, 10\)"),
    # jaccard
    ErrorSample("jaccard_dense", "row-sum-above-one",
                lambda d: on(d, *parts(torch.tensor([[0.9, 0.9], [0.0, 1.0]]).to_sparse_csr())),
                "jaccard_dense: row 0 sums to"),
    ErrorSample("jaccard_sparse", "not-a-probability",
                lambda d: (*on(d, *parts(torch.tensor([[1.5, -0.5], [0.0, 1.0]]).to_sparse_csr())), 0.5),
                r"jaccard_sparse: val\[0\] = 1.5 is not a probability"),
    ErrorSample("jaccard_sparse", "negative-max-distance",
                lambda d: (*on(d, *parts(torch.eye(2).to_sparse_csr())), -0.5),
                "jaccard_sparse: max_distance must be >= 0, got -0.5"),
    # dbscan
    ErrorSample("dbscan", "eps", lambda d: _dbscan(d, eps=-0.5), "dbscan: expected eps > 0, got -0.5"),
    ErrorSample("dbscan", "min-samples", lambda d: _dbscan(d, min_samples=0),
                "dbscan: expected min_samples >= 1, got 0"),
    ErrorSample("dbscan", "val-length", lambda d: _dbscan(d, val=lambda a: a["val"][:-1]),
                "dbscan: expected col and val of the same length"),
    ErrorSample("dbscan", "crow-end", lambda d: _dbscan(d, crow=lambda a: a["crow"][:-1]),
                r"dbscan: expected crow\[0\] == 0 and crow\[N\] == nnz"),
    ErrorSample("dbscan", "col-int32", lambda d: _dbscan(d, col=lambda a: a["col"].int()),
                "dbscan: expected col of dtype int64, got int32"),
    ErrorSample("dbscan", "col-out-of-range",
                lambda d: _dbscan(d, col=lambda a: torch.where(a["col"] == 0, 99, a["col"])),
                r"dbscan: col\[\d+\] = 99 is outside \[0, "),
    ErrorSample("dbscan", "nan", lambda d: _dbscan(d, val=lambda a: torch.full_like(a["val"], float("nan"))),
                "dbscan: val holds NaN"),
    ErrorSample("dbscan", "negative", lambda d: _dbscan(d, val=lambda a: -a["val"] - 1), "dbscan: val holds negative"),
    ErrorSample("dbscan", "duplicate-column", lambda d: _dbscan(d, col=_duplicate_column),
                "dbscan: row 0 holds column"),
    # segmented_kmeans
    ErrorSample("segmented_kmeans", "label-range", lambda d: _kmeans(d, num_clusters=2),
                r"segmented_kmeans: labels must lie in \[-1, num_clusters\) = \[-1, 2\)"),
    ErrorSample("segmented_kmeans", "float64", lambda d: _kmeans(d, x=lambda a: a["x"].double()),
                "segmented_kmeans: expected x of dtype float32, got float64"),
    ErrorSample("segmented_kmeans", "labels-length", lambda d: _kmeans(d, labels=lambda a: a["labels"][1:]),
                "segmented_kmeans: expected labels.size\\(0\\) == "),
    ErrorSample("segmented_kmeans", "max-iter", lambda d: _kmeans(d, max_iter=-1),
                "segmented_kmeans: expected max_iter >= 0, got -1"),
    ErrorSample("segmented_kmeans", "tol", lambda d: _kmeans(d, tol=-1.0), "segmented_kmeans: expected tol >= 0"),
    # memory_update_
    ErrorSample("memory_update_", "label-range", lambda d: _memory(d, labels=torch.tensor([0, 9])),
                r"memory_update_: labels\[1\] = 9 is out of range"),
    ErrorSample("memory_update_", "width", lambda d: _memory(d, features=torch.randn(2, 5)),
                r"memory_update_: expected features.size\(1\) == memory.size\(1\) = 4, got 5"),
    ErrorSample("memory_update_", "labels-int32", lambda d: _memory(d, labels=torch.tensor([0, 1], dtype=torch.int32)),
                "memory_update_: expected labels of dtype int64"),
    ErrorSample("memory_update_", "labels-length", lambda d: _memory(d, labels=torch.tensor([0, 1, 2])),
                r"memory_update_: expected labels.size\(0\) == 2, got 3"),
    ErrorSample("memory_update_", "float64", lambda d: _memory(d, features=torch.randn(2, 4, dtype=torch.float64)),
                "memory_update_: expected features of dtype float32"),
    ErrorSample("memory_update_", "momentum", lambda d: _memory(d, momentum=1.5),
                "memory_update_: expected 0 <= momentum <= 1, got 1.5"),
    ErrorSample("memory_update_", "strided", lambda d: _memory(d, memory=torch.randn(4, 3).t()),
                "memory_update_: expected memory to be contiguous"),
    # segment_reduce
    ErrorSample("segment_reduce", "segment-range", lambda d: _segments(d, num_segments=2),
                r"segment_reduce: segments\[2\] = 2 is out of range"),
    ErrorSample("segment_reduce", "needs-weights", lambda d: _segments(d, mode="weighted_mean"),
                "segment_reduce: mode 'weighted_mean' needs weights"),
    ErrorSample("segment_reduce", "mode", lambda d: _segments(d, mode="median"),
                "segment_reduce: mode must be one of 'mean', 'weighted_mean', 'weighted_sum_by_count', got 'median'"),
    # mmd2
    ErrorSample("mmd2", "x-group-range", lambda d: _mmd(d, x_groups=torch.tensor([0, 3, 1])),
                r"mmd2: x_groups\[1\] = 3 is out of range; expected 0 <= x_groups < num_groups = 2"),
    ErrorSample("mmd2", "y-group-negative", lambda d: _mmd(d, y_groups=torch.tensor([-1, 0])),
                r"mmd2: y_groups\[0\] = -1 is out of range"),
    ErrorSample("mmd2", "width", lambda d: _mmd(d, y=torch.randn(2, 5)),
                r"mmd2: expected y.size\(1\) == x.size\(1\) = 4, got 5"),
    ErrorSample("mmd2", "dtype", lambda d: _mmd(d, y=torch.randn(2, 4, dtype=torch.float64)),
                "mmd2: expected y of dtype float32, got float64"),
    ErrorSample("mmd2", "bandwidth", lambda d: _mmd(d, bandwidths=torch.tensor([1.0, -2.0])),
                r"mmd2: expected bandwidths > 0 and finite, got bandwidths\[1\] = -2"),
    ErrorSample("mmd2", "kernel-num", lambda d: _mmd(d, kernel_num=0), "mmd2: expected kernel_num >= 1, got 0"),
    ErrorSample("mmd2", "x-groups-length", lambda d: _mmd(d, x_groups=torch.tensor([0, 1])),
                r"mmd2: expected x_groups.size\(0\) == 3, got 2"),
]
