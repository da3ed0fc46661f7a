"""knn, k_reciprocal_encode, query_expansion, jaccard and jaccard_distance against the plain
references (uvireid_ext.reference) and the classic NumPy port (bench/baselines)."""

import numpy as np
import pytest
import torch
from common import DEVICES, EMULATED, NEEDS_DEVICE

import uvireid_ext as U
from uvireid_ext import reference as R
from uvireid_ext.ops import op
from uvireid_ext.reference.classic_jaccard import classic_jaccard

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def clustered(n: int, d: int, clusters: int, noise: float = 0.6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + noise * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def with_duplicates(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[5] = x[7]
    x[9] = x[7]
    x[20:26] = x[3]  # six copies of one row: ties at distance 0
    return x


def grid_points(n: int) -> torch.Tensor:
    """Integer grid points: many exactly equal distances between distinct rows."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 3, (n, 4), generator=g).float()


def dense(m: torch.Tensor) -> torch.Tensor:
    """Dense copy of a CSR tensor; entries equal to 0 stay visible through the returned mask."""
    return m.to_dense()


def csr_pairs(m: torch.Tensor) -> dict[tuple[int, int], float]:
    crow, col, val = m.crow_indices().cpu(), m.col_indices().cpu(), m.values().cpu()
    out = {}
    for i in range(len(crow) - 1):
        for p in range(int(crow[i]), int(crow[i + 1])):
            out[(i, int(col[p]))] = float(val[p])
    return out


# ------------------------------------------------------------------------------------------- knn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("candidates", ["bf16", "fp64"])
@pytest.mark.parametrize("make", [lambda: clustered(150, 24, 8), lambda: with_duplicates(clustered(150, 24, 8)),
                                  lambda: grid_points(120)])
def test_knn_matches_reference(device, candidates, make):
    x = make()
    for k in (1, 7, 40):
        idx, dist = U.knn(x.to(device), k, candidates=candidates)
        ridx, rdist = R.knn(x, k)
        assert torch.equal(idx.cpu(), ridx)
        torch.testing.assert_close(dist.cpu(), rdist, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("candidates", ["bf16", "fp64"])
def test_knn_exact_when_candidates_cannot_be_proven(device, candidates):
    # 80 copies of one row: no GEMM bound separates the ties, the exact ranking of whole rows must.
    x = clustered(200, 16, 5)
    x[100:180] = x[0]
    idx, dist = U.knn(x.to(device), 30, candidates=candidates)
    ridx, rdist = R.knn(x, 30)
    assert torch.equal(idx.cpu(), ridx)
    assert torch.equal(idx[0].cpu(), torch.cat([torch.tensor([0]), torch.arange(100, 129)]))


def near_duplicates(n: int = 160, d: int = 64, spread: float = 1e-3) -> torch.Tensor:
    """Tight groups: distances within a group (~1e-6) far below the bf16 tier's error bound (~1e-2),
    so that tier proves no row and the fp64 tier has to."""
    g = torch.Generator().manual_seed(3)
    centres = torch.nn.functional.normalize(torch.randn(4, d, generator=g), dim=1)
    return centres[torch.arange(n) % 4] + spread * torch.randn(n, d, generator=g)


def scaled(scale: float) -> torch.Tensor:
    return clustered(120, 24, 6) * scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [near_duplicates, lambda: near_duplicates(spread=1e-6),
                                  lambda: scaled(1e-25), lambda: scaled(1e-40), lambda: scaled(1e18),
                                  lambda: scaled(3e37), lambda: scaled(1.5e38)],
                         ids=["tight", "tighter", "tiny", "subnormal", "huge", "overflowing-gemm", "near-max"])
def test_knn_exact_at_extremes(device, make):
    """Rows the bf16 bound cannot settle (tight groups; products that underflow or overflow in a
    float32 GEMM; values that round to Inf in bf16) still get the exact ranking."""
    x = make()
    assert torch.isfinite(x).all()
    ridx, rdist = R.knn(x, 12)
    for candidates in ("bf16", "fp64"):
        idx, dist = U.knn(x.to(device), 12, candidates=candidates)
        assert torch.equal(idx.cpu(), ridx), candidates
        torch.testing.assert_close(dist.cpu(), rdist, rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_symmetric_tier_across_blocks(device):
    """N large enough for two row blocks (2^23 / N rows each) and D >= 2 x candidates, so the CPU takes
    the symmetric tier: rows of the second block get their first columns from the first block's
    product. Duplicates straddle the blocks. (The emulated CUDA twin takes 1000 rows: no CPU tier there.)"""
    n = 1000 if EMULATED else 4000
    x = clustered(n, 72, n // 20, noise=0.5)
    x[n - 100 : n - 80] = x[10]
    x[n * 3 // 8] = x[n * 5 // 8]
    ridx, rdist = R.knn(x, 10)
    for candidates in ("bf16", "fp64"):
        idx, dist = U.knn(x.to(device), 10, candidates=candidates)
        assert torch.equal(idx.cpu(), ridx), candidates
        torch.testing.assert_close(dist.cpu(), rdist, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["high", "medium"])
def test_knn_exact_under_reduced_matmul_precision(device, precision):
    """The bf16 tier multiplies bf16 values, which TF32 and bf16 matmul modes represent exactly, so
    torch's float32 matmul precision setting cannot change the result."""
    x = torch.cat([clustered(300, 512, 10, noise=0.3), near_duplicates(60, 512)])
    ridx, _ = R.knn(x, 20)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        idx, _ = U.knn(x.to(device), 20)
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(idx.cpu(), ridx)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_edge_sizes(device):
    idx, dist = U.knn(torch.zeros(0, 5, device=device), 3)
    assert idx.shape == (0, 3) and dist.shape == (0, 3) and idx.dtype == torch.int64
    idx, dist = U.knn(torch.ones(1, 5, device=device), 1)
    assert idx.tolist() == [[0]] and dist.tolist() == [[0.0]]
    x = clustered(10, 3, 2).to(device)
    idx, _ = U.knn(x, 10)  # k == N: a full ranking
    assert sorted(idx[0].tolist()) == list(range(10))


@pytest.mark.parametrize("device", DEVICES)
def test_knn_bad_input(device):
    x = clustered(10, 4, 2).to(device)
    with pytest.raises(RuntimeError, match="knn: k = 11 exceeds the number of rows N = 10"):
        op("knn")(x, 11)
    with pytest.raises(RuntimeError, match="knn: k must be >= 1, got 0"):
        op("knn")(x, 0)
    with pytest.raises(RuntimeError, match="knn: expected features to be 2-D, got 3-D"):
        op("knn")(x[None], 2)
    with pytest.raises(RuntimeError, match="knn: expected features of dtype float32, got float64"):
        op("knn")(x.double(), 2)
    x[4, 1] = float("nan")
    with pytest.raises(RuntimeError, match="knn: features row 4 is not finite"):
        op("knn")(x, 2)
    with pytest.raises(ValueError, match="knn: features row 4 is not finite"):
        U.knn(x, 2)
    with pytest.raises(TypeError, match="knn: expected floating point features, got torch.int64"):
        U.knn(torch.ones(3, 2, dtype=torch.int64, device=device), 1)
    with pytest.raises(RuntimeError, match="knn: candidates must be one of 'bf16', 'fp64', got 'fp16'"):
        op("knn")(x, 2, "fp16")
    with pytest.raises(ValueError, match="knn: candidates must be 'bf16' or 'fp64', got 'tf32'"):
        U.knn(x, 2, candidates="tf32")


# ---------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k1", [1, 5, 7, 20])
def test_k_reciprocal_encode_matches_reference(device, k1):
    x = with_duplicates(clustered(120, 16, 6))
    rank, _ = R.knn(x, max(k1, 25))
    v = U.k_reciprocal_encode(x.to(device), rank.to(device), k1)
    ref = R.k_reciprocal_encode(x, rank, k1)
    torch.testing.assert_close(dense(v).cpu().double(), ref, rtol=1e-6, atol=1e-7)
    assert ((dense(v).cpu() != 0) == (ref != 0)).all()  # the same support, entry by entry
    sums = dense(v).sum(1).cpu()
    # a row sums to 1, or is empty: a row with more than k1 - 1 exact duplicates of lower index does
    # not rank itself in its first k1 (ties go to the lower index), so its reciprocal set is empty
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))
    unique_rows = [i for i in range(120) if i not in {3, 5, 7, 9, *range(20, 26)}]
    assert torch.all((sums[unique_rows] - 1).abs() < 1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_k_reciprocal_encode_with_ranked_distances(device):
    """Dot products recovered from knn's distances give the same encoding to float32 precision."""
    x = with_duplicates(clustered(120, 16, 6))
    x[40] *= 3.0  # a row beyond the unit-norm range: its pairs fall back to direct dot products
    rank, dist = U.knn(x.to(device), 25)
    v = U.k_reciprocal_encode(x.to(device), rank, 20, rank_dist=dist)
    ref = R.k_reciprocal_encode(x, rank.cpu(), 20)
    torch.testing.assert_close(dense(v).cpu().double(), ref, rtol=1e-5, atol=1e-6)
    assert ((dense(v).cpu() != 0) == (ref != 0)).all()


def test_half_round_even():
    assert [R.half_round_even(k) for k in (30, 40, 38, 5, 7, 1)] == [15, 20, 19, 2, 4, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_encode_bad_input(device):
    x = clustered(10, 4, 2).to(device)
    rank, _ = U.knn(x, 4)
    with pytest.raises(RuntimeError, match="k_reciprocal_encode: rank has 4 columns but k1 = 5"):
        op("k_reciprocal_encode")(x, rank, None, 5)
    bad = rank.clone()
    bad[2, 1] = 10
    with pytest.raises(RuntimeError, match="k_reciprocal_encode: rank holds index 10"):
        op("k_reciprocal_encode")(x, bad, None, 3)
    with pytest.raises(RuntimeError, match=r"k_reciprocal_encode: expected rank.size\(0\) == 10, got 9"):
        op("k_reciprocal_encode")(x, rank[:9], None, 3)


# --------------------------------------------------------------------------- query expansion


def modes(n: int):
    g = torch.Generator().manual_seed(3)
    modality = torch.randint(0, 2, (n,), generator=g)
    camera = torch.randint(0, 3, (n,), generator=g) + 3 * modality
    zeros = torch.zeros(n, dtype=torch.int64)
    return [  # (pool, cap, outer, inner): plain, modality-balanced, EMCC, EMCC one modality
        (6, 6, zeros, zeros),
        (12, 12, modality, zeros),
        (20, 3, modality, camera),
        (15, 2, zeros, camera),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", range(4))
def test_query_expansion_matches_reference(device, mode):
    x = with_duplicates(clustered(120, 16, 6))
    pool, cap, outer, inner = modes(120)[mode]
    rank, _ = R.knn(x, 25)
    v_ref = R.k_reciprocal_encode(x, rank, 20)
    v = U.k_reciprocal_encode(x.to(device), rank.to(device), 20)
    q = U.query_expansion(v, rank.to(device), pool, cap, outer.to(device), inner.to(device))
    q_ref = R.query_expansion(v_ref, rank, outer, inner, pool, cap)
    torch.testing.assert_close(dense(q).cpu().double(), q_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dense(q).sum(1).cpu(), torch.ones(120), rtol=1e-5, atol=1e-5)


def test_expansion_cap_keeps_rank_order():
    rank = torch.tensor([[0, 1, 2, 3, 4, 5]] * 6)
    camera = torch.tensor([0, 0, 0, 1, 1, 0])
    groups = R.expansion_groups(rank, torch.zeros(6, dtype=torch.long), camera, 6, 2)
    assert groups[0] == {(0, 0): [0, 1], (0, 1): [3, 4]}


@pytest.mark.parametrize("device", DEVICES)
def test_query_expansion_bad_input(device):
    x = clustered(10, 4, 2).to(device)
    rank, _ = U.knn(x, 4)
    v = U.k_reciprocal_encode(x, rank, 3)
    crow, col, val = v.crow_indices(), v.col_indices(), v.values()
    z = torch.zeros(10, dtype=torch.int64, device=device)
    with pytest.raises(RuntimeError, match=r"query_expansion: expected outer.size\(0\) == 10, got 9"):
        op("query_expansion")(crow, col, val, rank, z[:9], z, 2, 2)
    with pytest.raises(RuntimeError, match="query_expansion: rank has 4 columns but pool = 5"):
        op("query_expansion")(crow, col, val, rank, z, z, 5, 2)
    with pytest.raises(RuntimeError, match="query_expansion: cap must be >= 1, got 0"):
        op("query_expansion")(crow, col, val, rank, z, z, 2, 0)
    bad = col.clone()
    bad[0] = 12
    with pytest.raises(RuntimeError, match=r"query_expansion: col\[0\] = 12 is outside \[0, 10\)"):
        op("query_expansion")(crow, bad, val, rank, z, z, 2, 2)


# ----------------------------------------------------------------------------------- jaccard


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_dense_and_sparse_match_reference(device):
    x = with_duplicates(clustered(150, 16, 6))
    rank, _ = R.knn(x, 20)
    zeros = torch.zeros(150, dtype=torch.long)
    v_ref = R.query_expansion(R.k_reciprocal_encode(x, rank, 20), rank, zeros, zeros, 6, 6)
    ref = R.jaccard_dense(v_ref)
    v = U.query_expansion(U.k_reciprocal_encode(x.to(device), rank.to(device), 20), rank.to(device), 6)
    d = U.jaccard(v)
    torch.testing.assert_close(d.cpu().double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(d, d.T)
    for max_distance in (0.0, 0.3, 0.6, 1.0):
        pairs = csr_pairs(U.jaccard(v, max_distance))
        dc = d.cpu()
        want = {tuple(p) for p in torch.nonzero(dc <= max_distance).tolist()} | {(i, i) for i in range(150)}
        assert set(pairs) == want  # every pair within max_distance, and the diagonal, nothing else
        assert all(dc[i, j].item() == val for (i, j), val in pairs.items())  # same float as dense


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_empty_rows_and_no_shared_columns(device):
    # row 2 is empty: it shares nothing, not even with itself (d = 1); rows 0/1 share nothing either
    v = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0.5, 0, 0.5]]).to_sparse_csr().to(device)
    d = U.jaccard(v)
    want = torch.tensor([[0, 1, 1, 1], [1, 0, 1, 1 - 0.5 / 1.5], [1, 1, 1, 1], [1, 1 - 0.5 / 1.5, 1, 0]])
    assert torch.equal(d.cpu(), want)
    assert set(csr_pairs(U.jaccard(v, 0.9))) == {(0, 0), (1, 1), (2, 2), (3, 3), (1, 3), (3, 1)}


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_rejects_rows_that_are_not_probabilities(device):
    heavy = torch.tensor([[0.9, 0.9], [0.0, 1.0]]).to_sparse_csr().to(device)
    with pytest.raises(RuntimeError, match="jaccard_dense: row 0 sums to"):
        U.jaccard(heavy)
    negative = torch.tensor([[1.5, -0.5], [0.0, 1.0]]).to_sparse_csr().to(device)
    with pytest.raises(RuntimeError, match=r"jaccard_sparse: val\[0\] = 1.5 is not a probability"):
        U.jaccard(negative, 0.5)


@pytest.mark.cuda
@NEEDS_DEVICE
def test_mixed_devices_are_named():
    x = clustered(20, 4, 2)
    rank, _ = U.knn(x, 5)
    with pytest.raises(RuntimeError, match="k_reciprocal_encode: expected rank on the same device as features"):
        op("k_reciprocal_encode")(x.cuda(), rank, None, 3)
    with pytest.raises(ValueError, match="jaccard_distance: modality is on cpu but features are on cuda"):
        U.jaccard_distance(x.cuda(), 5, 2, modality=torch.zeros(20, dtype=torch.long), expansion="modality")


# ------------------------------------------------------------------------ jaccard_distance


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_distance_matches_classic_port(device):
    """The contract of the distance-ops issue: N=2000, D=2048, k1=30, k2=6, to 1e-5 (N=400, D=256 for
    the emulated CUDA twin, which runs about 10^7 thread steps a second)."""
    n, dim = (400, 256) if EMULATED else (2000, 2048)
    x = clustered(n, dim, n // 20, noise=0.8)
    ours = U.jaccard_distance(x.to(device), 30, 6).cpu().numpy()
    classic = classic_jaccard(x.numpy(), 30, 6)
    np.testing.assert_allclose(ours, classic, rtol=0, atol=1e-5)


def test_jaccard_distance_modality_matches_classic_port():
    x = clustered(400, 64, 20)
    modality = torch.randint(0, 2, (400,))
    ours = U.jaccard_distance(x, 40, 32, modality=modality, expansion="modality").numpy()
    classic = classic_jaccard(x.numpy(), 40, 32, modality=modality.numpy())
    np.testing.assert_allclose(ours, classic, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_distance_emcc_matches_reference(device):
    x = clustered(150, 16, 6)
    modality = torch.randint(0, 2, (150,))
    camera = torch.randint(0, 3, (150,)) + 3 * modality
    d = U.jaccard_distance(x.to(device), 20, 3, modality=modality.to(device), camera=camera.to(device),
                           expansion="emcc", k3=30)
    rank, _ = R.knn(x, 30)
    v = R.query_expansion(R.k_reciprocal_encode(x, rank, 20), rank, modality, camera, 30, 3)
    torch.testing.assert_close(d.cpu().double(), R.jaccard_dense(v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_distance_sparse_agrees_with_dense(device):
    x = with_duplicates(clustered(300, 32, 10)).to(device)
    d = U.jaccard_distance(x, 20, 6).cpu()
    s = U.jaccard_distance(x, 20, 6, max_distance=0.6)
    assert s.layout == torch.sparse_csr and s.shape == (300, 300)
    pairs = csr_pairs(s)
    assert set(pairs) == {(i, j) for i, j in torch.nonzero(d <= 0.6).tolist()}
    assert all(d[i, j].item() == val for (i, j), val in pairs.items())


def test_jaccard_distance_deterministic_with_duplicates():
    x = with_duplicates(clustered(200, 16, 6))
    a = U.jaccard_distance(x, 20, 6)
    b = U.jaccard_distance(x, 20, 6)
    assert torch.equal(a, b)
    assert torch.equal(a[5], a[7]) and torch.equal(a[20], a[3])  # identical rows, identical distances


def test_jaccard_distance_edge_sizes():
    assert U.jaccard_distance(torch.zeros(0, 8), 30, 6).shape == (0, 0)
    assert U.jaccard_distance(torch.zeros(0, 8), 30, 6, max_distance=0.5).shape == (0, 0)
    # N=1 through the ops (jaccard_distance needs k1 < N)
    x = torch.ones(1, 4)
    rank, _ = U.knn(x, 1)
    d = U.jaccard(U.query_expansion(U.k_reciprocal_encode(x, rank, 1), rank, 1))
    assert d.tolist() == [[0.0]]


def test_jaccard_distance_bad_input():
    x = clustered(20, 8, 2)
    with pytest.raises(ValueError, match="jaccard_distance: k1 = 20 must be smaller than the number of samples N = 20"):
        U.jaccard_distance(x, 20, 6)
    cam = torch.zeros(20, dtype=torch.long)
    with pytest.raises(ValueError, match="jaccard_distance: k3 = 25 must be smaller than the number of samples N = 20"):
        U.jaccard_distance(x, 5, 2, camera=cam, expansion="emcc", k3=25)
    msg = r"jaccard_distance: modality must be a 1-D tensor of length N = 20, got \(19,\)"
    with pytest.raises(ValueError, match=msg):
        U.jaccard_distance(x, 5, 2, modality=cam[:19], expansion="modality")
    with pytest.raises(ValueError, match="jaccard_distance: modality is on meta but features are on cpu"):
        U.jaccard_distance(x, 5, 2, modality=cam.to("meta"), expansion="modality")
    with pytest.raises(ValueError, match="jaccard_distance: expansion='modality' needs modality ids"):
        U.jaccard_distance(x, 5, 2, expansion="modality")
    with pytest.raises(ValueError, match="jaccard_distance: expansion='emcc' needs camera ids"):
        U.jaccard_distance(x, 5, 2, expansion="emcc")
    with pytest.raises(ValueError, match="jaccard_distance: expansion must be"):
        U.jaccard_distance(x, 5, 2, expansion="camera")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"jaccard_distance: expected 2-D features \[N, D\], got shape \(20,\)"):
        U.jaccard_distance(x[:, 0], 5, 2)
    with pytest.raises(ValueError, match="jaccard_distance: max_distance must be >= 0, got -0.1"):
        U.jaccard_distance(x, 5, 2, max_distance=-0.1)
    x[3] = float("inf")
    with pytest.raises(ValueError, match="jaccard_distance: features row 3 is not finite"):
        U.jaccard_distance(x, 5, 2)


# ------------------------------------------------------------------ opcheck and torch.compile


def op_samples(device: str):
    x = with_duplicates(clustered(40, 8, 4)).to(device)
    rank, dist = U.knn(x, 10)
    v = U.k_reciprocal_encode(x, rank, 8)
    crow, col, val = v.crow_indices().clone(), v.col_indices().clone(), v.values().clone()
    z = torch.zeros(40, dtype=torch.int64, device=device)
    return [
        ("knn", (x, 5)),
        ("k_reciprocal_encode", (x, rank, None, 8)),
        ("k_reciprocal_encode", (x, rank, dist, 8)),
        ("query_expansion", (crow, col, val, rank, z, z, 4, 4)),
        ("jaccard_dense", (crow, col, val)),
        ("jaccard_sparse", (crow, col, val, 0.6)),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", range(6))
def test_opcheck(device, index):
    name, args = op_samples(device)[index]
    torch.library.opcheck(op(name), args)


def test_torch_compile_fullgraph():
    x = clustered(60, 8, 4)

    def pipeline(x: torch.Tensor) -> torch.Tensor:
        return U.jaccard_distance(x, 10, 4)

    torch._dynamo.reset()
    compiled = torch.compile(pipeline, fullgraph=True)
    assert torch.equal(compiled(x), pipeline(x))


# ------------------------------------------------------------------------------- CPU vs CUDA


@pytest.mark.cuda
@NEEDS_DEVICE
def test_cpu_and_cuda_agree_sparse():
    x = clustered(3000, 128, 60, noise=0.8)
    modality = torch.randint(0, 2, (3000,))
    camera = torch.randint(0, 3, (3000,)) + 3 * modality
    for kwargs in ({}, {"modality": modality, "expansion": "modality"},
                   {"modality": modality, "camera": camera, "expansion": "emcc", "k3": 40}):
        cpu = U.jaccard_distance(x, 30, 6, max_distance=0.6, **kwargs)
        gpu = U.jaccard_distance(x.cuda(), 30, 6, max_distance=0.6,
                                 **{k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        assert torch.equal(cpu.crow_indices(), gpu.crow_indices().cpu())
        assert torch.equal(cpu.col_indices(), gpu.col_indices().cpu())
        torch.testing.assert_close(cpu.values(), gpu.values().cpu(), rtol=0, atol=2e-6)
