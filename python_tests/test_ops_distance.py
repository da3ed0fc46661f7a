"""uvireid_ext.ops.distance beyond the sample registry (test_ops_registry.py): the wrappers' checks,
matmul precision, jaccard_distance against the classic NumPy port (uvireid_ext.reference), torch.compile,
CPU vs CUDA."""

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from common import DEVICES, EMULATED, NEEDS_DEVICE
from op_samples import clustered, csr_pairs, near_duplicates, with_duplicates

import uvireid_ext as U
from uvireid_ext import reference as R
from uvireid_ext.ops import op
from uvireid_ext.reference.classic_jaccard import classic_jaccard

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


# ------------------------------------------------------------------------------------------- knn


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


def knn_with_mm(x: torch.Tensor, k: int, mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.dtype]]:
    """U.knn(x, k) with ``mm`` installed as aten::mm's CPU kernel through the dispatcher, and the
    dtypes of the products the kernel asked for, in order."""
    dtypes = []

    def recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dtypes.append(a.dtype)
        return mm(a, b)

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overriding a kernel torch already has
        lib.impl("mm", recording, "CPU")
    try:
        idx, dist = U.knn(x, k)
    finally:
        lib._destroy()
    return idx, dist, dtypes


def exact_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in float64 without mm (it is what knn_with_mm replaces)."""
    return (a.double()[:, :, None] * b.double()[None]).sum(1)


@pytest.mark.skipif(EMULATED, reason="the CPU kernel is not in the emulated build")
def test_knn_redoes_in_float64_when_the_gemm_breaks_the_bound():
    """If the bf16 product ever disagrees with the bound's model of it (an exact key below its lower
    bound), the CPU kernel must redo every row in float64. The product is replaced here, through the
    dispatcher, by one that lies: every inner product is lowered (so every candidate's exact key falls
    below its bound) and each row's true neighbours are lowered much more (so they are not even
    candidates). Without the redo the result would miss them."""
    n, k = 120, 5
    x = clustered(n, 16, 6, noise=0.3)
    ridx, rdist = R.knn(x, k)
    near = torch.zeros(n, n, dtype=torch.bool).scatter_(1, ridx, True)

    def lying_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        exact = exact_product(a, b)
        if a.dtype != torch.bfloat16:
            return exact.to(a.dtype)
        m = exact.shape[0]  # the kernel pads its bf16 operand with zero rows
        assert exact.shape == (m, m) and m >= n, "the test expects one block of every row"
        lie = torch.zeros(m, m, dtype=torch.float64)
        lie[:n, :n] = 50.0 * near.double()
        return (exact - 5.0 - lie).to(a.dtype)

    idx, dist, dtypes = knn_with_mm(x, k, lying_mm)
    assert dtypes[0] == torch.bfloat16 and torch.float64 in dtypes  # the bf16 tier ran, then float64
    assert torch.equal(idx, ridx)
    torch.testing.assert_close(dist, rdist)


@pytest.mark.skipif(EMULATED, reason="the CPU kernel is not in the emulated build")
@pytest.mark.parametrize(("n", "k"), [(1024, 10), (4096, 25)])
def test_knn_exact_when_a_seeded_threshold_is_too_low(n, k):
    """The CPU kernel starts each row's candidate threshold at a bound taken from a sample of rows
    (every 4th of the first 1,024 here). 20 exact duplicates placed on the sampled rows make that
    start too low for their rows (at n = 4,096 and k = 25 it lets fewer than k candidates in): those
    rows cannot be proven at bf16 and must go to the float64 tier, not return an unproven list. With
    thresholds started at +Inf the bf16 tier proves them, so the float64 call shows the path ran."""
    x = clustered(n, 16, 40, noise=0.3)
    x[0:80:4] = x[0]
    ridx, rdist = R.knn(x, k)
    idx, dist, dtypes = knn_with_mm(x, k, lambda a, b: exact_product(a, b).to(a.dtype))
    assert dtypes[0] == torch.bfloat16 and torch.float64 in dtypes
    assert torch.equal(idx, ridx)
    assert torch.equal(dist, rdist)


@pytest.mark.skipif(EMULATED, reason="the CPU kernel is not in the emulated build")
@pytest.mark.parametrize("n", [1025, 2100, 9000])
def test_knn_exact_at_tile_and_block_edges(n):
    """The CPU kernel multiplies blocks of rows with tiles of up to 1,024 columns (the bf16 operand
    padded with zero rows): sizes just past one and two tiles, and past 8,192 rows, where a block
    has fewer rows than a tile and starts inside one. A duplicate joins the first and last blocks."""
    x = clustered(n, 16, n // 20, noise=0.4)
    x[n - 3] = x[1]
    ridx, rdist = R.knn(x, 12)
    idx, dist = U.knn(x, 12)
    assert torch.equal(idx, ridx)
    torch.testing.assert_close(dist, rdist)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_bad_input(device):
    # the op's own errors are in op_samples.ERROR_SAMPLES; these are the wrapper's
    x = clustered(10, 4, 2).to(device)
    x[4, 1] = float("nan")
    with pytest.raises(ValueError, match="knn: features row 4 is not finite"):
        U.knn(x, 2)
    with pytest.raises(TypeError, match="knn: expected floating point features, got torch.int64"):
        U.knn(torch.ones(3, 2, dtype=torch.int64, device=device), 1)
    # the wrappers screen with one sum: an Inf that a -Inf cancels, or values whose float32 sum
    # overflows, must neither pass nor be refused by mistake
    y = clustered(10, 4, 2).to(device)
    y[2, 0], y[6, 3] = float("inf"), -float("inf")
    with pytest.raises(ValueError, match="knn: features row 2 is not finite"):
        U.knn(y, 2)
    big = torch.full((6, 3), 3e38, device=device)
    big[::2] *= -1
    assert U.knn(big, 1)[0].shape == (6, 1)
    with pytest.raises(ValueError, match="knn: candidates must be 'bf16' or 'fp64', got 'tf32'"):
        U.knn(x, 2, candidates="tf32")


# ---------------------------------------------------------------------------------- encoding


def test_rank_with_a_repeated_index_is_refused():
    x = clustered(12, 4, 2)
    rank, _ = U.knn(x, 5)
    v = U.k_reciprocal_encode(x, rank, 4)
    bad = rank.clone()
    bad[3, 2] = bad[3, 1]
    with pytest.raises(ValueError, match=r"k_reciprocal_encode: rank row 3 repeats an index in its first 4 columns"):
        U.k_reciprocal_encode(x, bad, 4)
    with pytest.raises(ValueError, match=r"query_expansion: rank row 3 repeats an index in its first 3 columns"):
        U.query_expansion(v, bad, 3)
    # a repeat beyond the columns the op reads is no error
    late = rank.clone()
    late[3, 4] = late[3, 0]
    U.k_reciprocal_encode(x, late, 4)
    U.query_expansion(v, late, 3)


def test_half_round_even():
    assert [R.half_round_even(k) for k in (30, 40, 38, 5, 7, 1)] == [15, 20, 19, 2, 4, 0]


# --------------------------------------------------------------------------- query expansion


def test_expansion_cap_keeps_rank_order():
    rank = torch.tensor([[0, 1, 2, 3, 4, 5]] * 6)
    camera = torch.tensor([0, 0, 0, 1, 1, 0])
    groups = R.expansion_groups(rank, torch.zeros(6, dtype=torch.long), camera, 6, 2)
    assert groups[0] == {(0, 0): [0, 1], (0, 1): [3, 4]}


# ----------------------------------------------------------------------------------- jaccard


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
@pytest.mark.parametrize(("k1", "k2"), [(10, 25), (8, 40), (12, 1), (7, 2)])
def test_jaccard_distance_is_classic_at_every_k2(device, k1, k2):
    """The classic rank list has k1 columns, so its expansion averages min(k1, k2) rows, and k2 = 1
    skips it: with duplicated rows the first neighbour of a row can be its lower-index twin, whose
    encoding the row must not take."""
    x = with_duplicates(clustered(200, 24, 8, noise=0.6))
    # more copies of one row than fit in a half-k1 rank list: the copies' encodings then differ (the
    # reciprocal test asks for the row itself), so taking a twin's encoding would show
    x[40:56] = x[3]
    modality = torch.randint(0, 2, (x.shape[0],), generator=torch.Generator().manual_seed(3))
    # the port's kNN orders exact ties arbitrarily, as faiss does: give it ours (ties to the lower index)
    rank, _ = R.knn(x, k1)
    ours = U.jaccard_distance(x.to(device), k1, k2).cpu().numpy()
    np.testing.assert_allclose(ours, classic_jaccard(x.numpy(), k1, k2, rank=rank.numpy()), rtol=0, atol=1e-5)
    ours = U.jaccard_distance(x.to(device), k1, k2, modality=modality.to(device), expansion="modality")
    classic = classic_jaccard(x.numpy(), k1, k2, modality=modality.numpy(), rank=rank.numpy())
    np.testing.assert_allclose(ours.cpu().numpy(), classic, rtol=0, atol=1e-5)
    if k2 == 1:  # no expansion at all: the Jaccard distance of the k-reciprocal encodings themselves
        expected = R.jaccard_dense(R.k_reciprocal_encode(x, rank, k1))
        got = U.jaccard_distance(x.to(device), k1, 1).cpu().double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_jaccard_distance_emcc_k2_one_is_a_cap(device):
    """In EMCC k2 caps each (modality, camera) group, so k2 = 1 keeps the best-ranked row of every group
    of the k3 pool: an expansion, unlike the classic k2 = 1."""
    x = with_duplicates(clustered(150, 16, 6))
    n = x.shape[0]
    modality = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1))
    camera = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(2)) + 3 * modality
    d = U.jaccard_distance(x.to(device), 10, 1, modality=modality.to(device), camera=camera.to(device),
                           expansion="emcc", k3=24)
    rank, _ = R.knn(x, 24)
    v = R.query_expansion(R.k_reciprocal_encode(x, rank, 10), rank, modality, camera, 24, 1)
    torch.testing.assert_close(d.cpu().double(), R.jaccard_dense(v), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(d.cpu(), U.jaccard_distance(x, 10, 1))  # not the classic skip


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
    pairs = csr_pairs(s.crow_indices(), s.col_indices(), s.values())
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
