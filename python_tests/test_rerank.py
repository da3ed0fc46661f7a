"""uvireid_ext.re_rank and uvireid_ext.compat against the classic NumPy port (uvireid_ext.reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import DEVICES

import uvireid_ext
from uvireid_ext.compat import compute_jaccard_distance, re_ranking
from uvireid_ext.reference.classic_jaccard import classic_jaccard
from uvireid_ext.reference.classic_rerank import classic_re_ranking

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def people(n: int, dim: int = 32, ids: int = 30, noise: float = 0.5, seed: int = 0, unit: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ids, dim, generator=g)[torch.randint(0, ids, (n,), generator=g)]
    x = x + noise * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1) if unit else 3 * x


def matrices(x: torch.Tensor, q: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The metric's distance matrices as a user computes them (float64, stored float32)."""
    xd = x.double()
    if metric == "cosine":
        xd = torch.nn.functional.normalize(xd, dim=1)
        d = 1 - xd @ xd.T
    else:
        d = torch.cdist(xd, xd)
        d = d * d if metric == "sqeuclidean" else d
    d.fill_diagonal_(0)
    d = d.float().numpy()
    return d[:q, q:], d[:q, :q], d[q:, q:]


SETTINGS = [(20, 6, 0.3), (7, 1, 0.0), (5, 3, 1.0), (11, 15, 0.5), (4, 2, 0.3)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("k1", "k2", "lam"), SETTINGS)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_re_rank_matches_the_classic_function(device, k1, k2, lam, metric):
    x = people(300, unit=metric != "cosine")
    q = 80
    expected = classic_re_ranking(*matrices(x, q, metric), k1, k2, lam)
    ours = uvireid_ext.re_rank(x[:q].to(device), x[q:].to(device), k1, k2, lam, metric=metric)
    assert ours.shape == (q, 220) and ours.dtype == torch.float32 and ours.device.type == device
    np.testing.assert_allclose(ours.cpu().numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("k1", "k2", "lam"), SETTINGS)
def test_compat_re_ranking_matches_the_classic_function(k1, k2, lam):
    qg, qq, gg = matrices(people(250, seed=1), 60)
    np.testing.assert_allclose(re_ranking(qg, qq, gg, k1, k2, lam), classic_re_ranking(qg, qq, gg, k1, k2, lam),
                               rtol=0, atol=1e-5)


def test_compat_re_ranking_of_asymmetric_and_float64_matrices():
    # column-max normalisation, then the transpose: row i holds the distances *to* i
    rng = np.random.default_rng(2)
    qg, qq, gg = (m.astype(np.float64) * rng.uniform(0.5, 1.5, m.shape) for m in matrices(people(200, seed=2), 50))
    expected = classic_re_ranking(qg, qq, gg, 12, 4, 0.3)
    np.testing.assert_allclose(re_ranking(qg, qq, gg, 12, 4, 0.3), expected, rtol=0, atol=1e-5)
    assert re_ranking(qg, qq, gg, 12, 4, 0.3).dtype == np.float32


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_re_rank_in_many_blocks(monkeypatch, metric):
    # Market/MSMT sizes split every pass into blocks (rank pass, weights, Jaccard, the final blend
    # over query rows that end before the gallery columns start); tiny block budgets force that here.
    import uvireid_ext.rerank as rr

    monkeypatch.setattr(rr, "_BLOCK_BYTES", 4 * 300 * 7)  # 7 rows of W per block
    monkeypatch.setattr(rr, "_TRIPLES", 500)
    x = people(300, seed=5, unit=metric != "cosine")
    q = 80
    expected = classic_re_ranking(*matrices(x, q, metric), 20, 6, 0.3)
    np.testing.assert_allclose(uvireid_ext.re_rank(x[:q], x[q:], 20, 6, 0.3, metric=metric).numpy(), expected,
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(re_ranking(*matrices(x, q, metric), 20, 6, 0.3), expected, rtol=0, atol=1e-5)


def test_small_and_edge_sizes():
    x = people(12, seed=3)
    for q in (1, 11):  # a single query, a single gallery item
        expected = classic_re_ranking(*matrices(x, q), 11, 3, 0.3)
        np.testing.assert_allclose(uvireid_ext.re_rank(x[:q], x[q:], 11, 3, 0.3).numpy(), expected, atol=1e-5)
    assert uvireid_ext.re_rank(x[:0], x, 3, 2).shape == (0, 12)
    assert uvireid_ext.re_rank(x, x[:0], 3, 2).shape == (12, 0)


def test_duplicated_items():
    # exact copies tie at distance 0: every tie order gives the same sets here (the copies are
    # interchangeable), so the result must still equal the classic one
    x = people(200, seed=4)
    x[10:14] = x[3]
    x[150] = x[3]
    expected = classic_re_ranking(*matrices(x, 60), 20, 6, 0.3)
    np.testing.assert_allclose(uvireid_ext.re_rank(x[:60], x[60:], 20, 6, 0.3).numpy(), expected, atol=1e-5)


def test_re_rank_bad_input_is_named():
    x = people(40)
    with pytest.raises(ValueError, match="re_rank: query and gallery differ in feature dimension: 32 vs 16"):
        uvireid_ext.re_rank(x, torch.randn(5, 16))
    with pytest.raises(ValueError, match=r"re_rank: k1 = 40 must be smaller than the number of items Q \+ G = 40"):
        uvireid_ext.re_rank(x[:10], x[10:], k1=40)
    with pytest.raises(ValueError, match=r"re_rank: lambda_value must be in \[0, 1\], got 1.5"):
        uvireid_ext.re_rank(x[:10], x[10:], lambda_value=1.5)
    bad = x.clone()
    bad[17, 3] = float("nan")
    with pytest.raises(ValueError, match="re_rank: gallery row 7 is not finite"):
        uvireid_ext.re_rank(bad[:10], bad[10:], 5, 3)
    with pytest.raises(ValueError, match="re_rank: metric must be one of euclidean, sqeuclidean, cosine, got 'l1'"):
        uvireid_ext.re_rank(x[:10], x[10:], 5, 3, metric="l1")
    with pytest.raises(ValueError, match="re_rank: k2 must be an int >= 1, got 0"):
        uvireid_ext.re_rank(x[:10], x[10:], 5, 0)
    same = torch.ones(6, 4)
    with pytest.raises(ValueError, match="re_rank: every distance to item 0 is 0"):
        uvireid_ext.re_rank(same[:2], same[2:], 3, 2)


def test_compat_bad_input_is_named():
    qg, qq, gg = matrices(people(50), 10)
    with pytest.raises(ValueError, match=r"re_ranking: q_q_dist must be a floating point matrix of shape \(10, 10\)"):
        re_ranking(qg, gg, gg)
    with pytest.raises(ValueError, match=r"re_ranking: g_g_dist must be a floating point matrix of shape \(40, 40\)"):
        re_ranking(qg, qq, gg[:5])
    nan = gg.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="re_ranking: g_g_dist holds NaN or Inf"):
        re_ranking(qg, qq, nan)
    with pytest.raises(ValueError, match=r"re_ranking: lambda_value must be in \[0, 1\], got -0.1"):
        re_ranking(qg, qq, gg, lambda_value=-0.1)
    with pytest.raises(ValueError, match="compute_jaccard_distance: search_option must be 0, 1, 2 or 3, got 7"):
        compute_jaccard_distance(torch.randn(20, 4), search_option=7)


def test_compat_compute_jaccard_distance(capsys):
    x = people(300, seed=5)
    d = compute_jaccard_distance(x, k1=30, k2=6, search_option=3)
    assert isinstance(d, np.ndarray) and d.dtype == np.float32 and d.shape == (300, 300)
    np.testing.assert_allclose(d, classic_jaccard(x.numpy(), 30, 6), rtol=0, atol=1e-5)
    assert "Computing jaccard distance..." in capsys.readouterr().out
    half = compute_jaccard_distance(x, 30, 6, print_flag=False, use_float16=True)
    assert half.dtype == np.float16 and capsys.readouterr().out == ""
    np.testing.assert_allclose(half.astype(np.float32), d, atol=1e-3)


def test_protocol_and_cli_rerank(tmp_path, capsys):
    from uvireid_ext.__main__ import main
    from uvireid_ext.data.sets import load_eval_set
    from uvireid_ext.data.synthetic import make_sysu
    from uvireid_ext.protocol import run_protocol
    from uvireid_ext.rerank import ReRank

    root = str(tmp_path / "sysu")
    make_sysu(root, ids=12, per_camera=6, size=(16, 32))
    es = load_eval_set("sysu", root, 32, 16, trials=2)

    def extract(images, is_ir):  # a fixed "model": the mean colour of a few image regions
        x = images.float().view(len(images), 4, 8, 4, 4, 3).mean((2, 4))
        return x.flatten(1) + 10 * is_ir[:, None].float()

    plain = run_protocol(es, extract)
    rr = ReRank(k1=8, k2=3, lambda_value=0.3)
    reranked = run_protocol(es, extract, rerank=rr)
    assert reranked.mean.mAP != plain.mean.mAP  # a different ranking was evaluated
    # the re-ranked trial equals the protocol applied to re_rank's distances by hand
    from uvireid_ext.evaluate import eval_sysu

    qf = torch.nn.functional.normalize(extract(es.query, torch.ones(len(es.query), dtype=torch.bool)), dim=1)
    g_img, g_pid, g_cam = es.galleries[0]
    gf = torch.nn.functional.normalize(extract(g_img, torch.zeros(len(g_img), dtype=torch.bool)), dim=1)
    by_hand = eval_sysu(uvireid_ext.re_rank(qf, gf, 8, 3, 0.3), es.q_pid, g_pid, es.q_cam, g_cam)
    assert by_hand.mAP == reranked.trials[0].mAP
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--rerank", "--lambda", "2"]) == 2
    assert "lambda_value must be in [0, 1], got 2.0" in capsys.readouterr().err


@pytest.mark.parametrize("n,depth,dups,block", [(1, 1, 0, None), (5, 5, 0, None), (300, 21, 0, None),
                                               (300, 21, 40, None), (2500, 7, 0, None), (300, 21, 40, 5),
                                               (64, 21, 8, 30)])
def test_symmetric_rank_pass_equals_the_row_pass(monkeypatch, n, depth, dups, block):
    # The symmetric pass (each product used for a row and a column, running lists merged block by
    # block) must give every row the same first-`depth` items and the same maximum as ranking whole
    # rows, up to float32 rounding: S(j, i) from i's block and S(i, j) from j's differ by an ulp, so
    # the order may differ only among distances that close (duplicate rows: exact ties).
    from uvireid_ext.rerank import FeatureRows, _ranks_of_rows, _ranks_symmetric

    if block is not None:  # blocks smaller than depth: lists still partly empty after the first
        import uvireid_ext.rerank as rr

        monkeypatch.setattr(rr, "_BLOCK_BYTES", 4 * n * block)
    x = people(n, dim=16, ids=max(1, n // 10))
    if dups:
        x[-dups:] = x[:dups]
    src = FeatureRows(x, "euclidean")
    q = n // 3
    qg_row, qg_sym = torch.full((q, n - q), float("nan")), torch.full((q, n - q), float("nan"))
    r_row, s_row = _ranks_of_rows(src, depth, qg_row)
    r_sym, s_sym = _ranks_symmetric(src, depth, qg_sym)
    torch.testing.assert_close(s_sym, s_row, rtol=1e-6, atol=1e-6)
    full = torch.cat([src.rows(i, i + 1) for i in range(n)])
    torch.testing.assert_close(qg_sym, full[:q, q:], rtol=1e-6, atol=1e-6)  # kept for the λ term
    torch.testing.assert_close(qg_row, full[:q, q:], rtol=1e-6, atol=1e-6)
    d_row, d_sym = full.gather(1, r_row), full.gather(1, r_sym)
    torch.testing.assert_close(d_sym, d_row, rtol=0, atol=1e-6)
    assert bool((r_sym >= 0).all()) and all(len(set(r.tolist())) == depth for r in r_sym)
    # the set of the first `depth` is what the method uses: equal wherever the cut is not a near-tie
    sv = full.sort(1).values
    clear = sv[:, depth] - sv[:, depth - 1] > 1e-5 if depth < n else torch.ones(n, dtype=torch.bool)
    assert torch.equal(r_sym[clear].sort(1).values, r_row[clear].sort(1).values)
    assert int(clear.sum()) >= (n - 2 * dups) // 2  # the set check covers most rows
