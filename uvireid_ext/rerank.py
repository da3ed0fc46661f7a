"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of query × gallery distances, with the classic
function's semantics (docs/rerank.md) but no (Q + G)² tensor: neighbour lists, encodings and their
query expansion are sparse, and only the [Q, G] result is dense.

Steps, for N = Q + G items (queries first):

1. S = the squared distances, Sᵀ row i divided by its maximum: W (every entry in [0, 1]).
2. The first max(k1 + 1, k2) items of every row of W (self included): the only ranks that matter
   (from features, S is symmetric and each block product serves rows and columns: half the GEMM).
3. k-reciprocal sets at depth k1 + 1 and h + 1 (h = round-half-even(k1 / 2)), the ⅔ expansion, and
   weights exp(−W) normalised over each set: the encoding V (CSR).
4. V′ = the mean of the V rows of each item's first k2 ranked items (none when k2 = 1), with the
   ``query_expansion`` op.
5. For the query rows only, the Jaccard distance J to every gallery item, and (1 − λ)·J + λ·W.

Memory: O(N · (k1 + 1)(h + 1)) for the lists, the nonzeros of V and V′, and the [Q, G] output; the
rows of W are made block by block. The same code serves features (:func:`re_rank`) and given
distance matrices (``uvireid_ext.compat.re_ranking``) through a source of Sᵀ rows.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from .ops import finite_rows, op

__all__ = ["Metric", "ReRank", "re_rank"]

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS = ("euclidean", "sqeuclidean", "cosine")
_BLOCK_BYTES = 1 << 28  # rows of W made at once: about 256 MB of float32
_TRIPLES = 1 << 25  # (query entry, gallery entry) pairs of the Jaccard step handled at once


class SquaredRows(Protocol):
    """The squared distance matrix S, seen by rows of its transpose (row i: the distances to item i)."""

    n: int
    device: torch.device
    pair_bytes: int  # memory one gathered pair takes
    symmetric: bool  # S = Sᵀ: a rank pass can use each product twice

    def rows(self, start: int, stop: int, col0: int = 0) -> Tensor:
        """Sᵀ[start:stop, col0:] as float32 [stop − start, n − col0]."""
        ...

    def gather(self, start: int, members: Tensor) -> Tensor:
        """Sᵀ[start + r, members[r, m]] as float32 [b, M] (entries where members < 0 are arbitrary)."""
        ...


class FeatureRows:
    """S from features and a metric (``euclidean``: plain distances, which the method squares;
    ``sqeuclidean``: squared ones, squared again, as pipelines that pass squared distances get;
    ``cosine``: 1 − cos). S is symmetric, so Sᵀ = S; the diagonal is exactly 0."""

    def __init__(self, x: Tensor, metric: str) -> None:
        self.metric = metric
        self.x = torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x
        self.sq = (self.x * self.x).sum(1)
        self.n, self.device = x.shape[0], x.device
        self.pair_bytes = 4 * x.shape[1]
        self.symmetric = True

    def _square(self, inner: Tensor, sq_i: Tensor, sq_j: Tensor) -> Tensor:
        """In place: the metric's squared distance from the inner products."""
        if self.metric == "cosine":
            return inner.neg_().add_(1).square_()
        d2 = inner.mul_(-2).add_(sq_j).add_(sq_i).clamp_min_(0)
        return d2 if self.metric == "euclidean" else d2.square_()

    def rows(self, start: int, stop: int, col0: int = 0) -> Tensor:
        out = self._square(self.x[start:stop] @ self.x[col0:].T, self.sq[start:stop, None], self.sq[None, col0:])
        lo = max(start, col0)
        r = torch.arange(lo, max(lo, stop), device=out.device)  # the diagonal, where the block holds it
        out[r - start, r - col0] = 0
        return out

    def gather(self, start: int, members: Tensor) -> Tensor:
        idx = members.clamp_min(0)
        rows = self.x[start : start + len(members)]
        if self.device.type == "cpu":
            # The products at the members only (SDDMM): no [b, M, D] copy of the members' features.
            valid = members >= 0
            crow = torch.zeros(len(members) + 1, dtype=torch.int64)
            crow[1:] = valid.sum(1).cumsum(0)
            with warnings.catch_warnings():  # torch calls its sparse CSR support beta
                warnings.simplefilter("ignore", UserWarning)
                pattern = torch.sparse_csr_tensor(crow, members[valid], torch.zeros(int(crow[-1])),
                                                  size=(len(members), self.n), check_invariants=False)
            inner = torch.zeros(members.shape)
            inner[valid] = torch.sparse.sampled_addmm(pattern, rows, self.x.T, beta=0.0).values()
        else:
            inner = torch.bmm(self.x[idx], rows[:, :, None]).squeeze(-1)
        out = self._square(inner, self.sq[start : start + len(members), None], self.sq[idx])
        own = torch.arange(start, start + len(members), device=out.device)[:, None]
        return out.masked_fill_(members == own, 0)


@dataclass(frozen=True)
class ReRank:
    """Settings of :func:`re_rank` for the test protocols (the classic defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    metric: Metric = "euclidean"

    def __call__(self, query: Tensor, gallery: Tensor) -> Tensor:
        return re_rank(query, gallery, **asdict(self))


def _check_features(fn: str, name: str, t: Tensor) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 2 or not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating point [n, D] tensor, got "
                         f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    finite_rows(fn, name, t)
    return t.float()


def check_settings(fn: str, n: int, k1: int, k2: int, lambda_value: float) -> None:
    for name, v in (("k1", k1), ("k2", k2)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{fn}: {name} must be an int >= 1, got {v!r}")
    if k1 >= n:
        raise ValueError(f"{fn}: k1 = {k1} must be smaller than the number of items Q + G = {n}")
    if k2 > n:
        raise ValueError(f"{fn}: k2 = {k2} must be at most the number of items Q + G = {n}")
    if not isinstance(lambda_value, (int, float)) or not 0 <= lambda_value <= 1:
        raise ValueError(f"{fn}: lambda_value must be in [0, 1], got {lambda_value!r}")


def re_rank(query: Tensor, gallery: Tensor, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
            metric: Metric = "euclidean") -> Tensor:
    """k-reciprocal re-ranked distances between query and gallery features.

    Equal, up to float32 rounding and the order of exact ties, to the classic ``re_ranking`` (the one
    torchreid and AGW copy) applied to the metric's query–gallery, query–query and
    gallery–gallery distance matrices; no (Q + G)² matrix is built.

    Args:
        query: [Q, D] floating point features.
        gallery: [G, D] floating point features, on the same device.
        k1: k-reciprocal neighbourhood, 1 <= k1 < Q + G.
        k2: query expansion over each item's first k2 ranked items (1 = none), k2 <= Q + G.
        lambda_value: weight of the normalised squared distance in the result, in [0, 1].
        metric: "euclidean" (plain distances, as the method expects), "sqeuclidean" (squared
            distances passed in, as torchreid's pipeline does) or "cosine" (1 − cosine similarity).

    Returns:
        [Q, G] float32 distances, on the features' device (smaller is more similar).
    """
    fn = "re_rank"
    q = _check_features(fn, "query", query)
    g = _check_features(fn, "gallery", gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"{fn}: query and gallery differ in feature dimension: {q.shape[1]} vs {g.shape[1]}")
    if q.device != g.device:
        raise ValueError(f"{fn}: query is on {q.device} but gallery is on {g.device}")
    if metric not in METRICS:
        raise ValueError(f"{fn}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if q.shape[0] == 0 or g.shape[0] == 0:
        return torch.zeros(q.shape[0], g.shape[0], device=q.device)
    check_settings(fn, q.shape[0] + g.shape[0], k1, k2, lambda_value)
    return re_rank_rows(FeatureRows(torch.cat([q, g]), metric), q.shape[0], k1, k2, lambda_value, fn)


def _half(k1: int) -> int:
    return int(round(k1 / 2))  # Python rounds half to even, as numpy.around


def _reciprocal(rank: Tensor, depth: int, block: int) -> Tensor:
    """[N, depth] bool: whether the a-th of i's first ``depth`` items has i among its own first ``depth``."""
    n = rank.shape[0]
    first = rank[:, :depth]
    out = torch.empty(n, depth, dtype=torch.bool, device=rank.device)
    for s in range(0, n, block):
        own = torch.arange(s, min(n, s + block), device=rank.device)
        out[s : s + own.numel()] = (first[first[s : s + own.numel()]] == own[:, None, None]).any(-1)
    return out


def _encode(src: SquaredRows, rank: Tensor, scale: Tensor, k1: int) -> tuple[Tensor, Tensor, Tensor]:
    """The encoding V as CSR parts (crow, col, val), columns sorted (docs/rerank.md, steps 6–9)."""
    n, dev = rank.shape[0], rank.device
    h = _half(k1)
    full, half = rank[:, : k1 + 1], rank[:, : h + 1]
    block = max(1, (1 << 22) // ((k1 + 1) ** 2 * (h + 1)))
    in_r = _reciprocal(rank, k1 + 1, max(1, (1 << 24) // (k1 + 1) ** 2))  # R(i) = full[i][in_r[i]]
    in_h = _reciprocal(rank, h + 1, max(1, (1 << 24) // (h + 1) ** 2))  # Rh(c) = half[c][in_h[c]]
    r_ids = torch.where(in_r, full, -1)
    h_ids = torch.where(in_h, half, -1)
    parts = []
    for s in range(0, n, block):
        e = min(n, s + block)
        cand = full[s:e]  # [b, k1 + 1] candidates c, valid where in_r
        hc = h_ids[cand]  # [b, k1 + 1, h + 1]: Rh(c), −1 padded
        shared = ((hc[..., None] == r_ids[s:e, None, None, :]) & (hc[..., None] >= 0)).any(-1).sum(-1)
        size = (hc >= 0).sum(-1)
        accept = in_r[s:e] & (3 * shared > 2 * size)
        members = torch.cat([r_ids[s:e], torch.where(accept[..., None], hc, -1).flatten(1)], 1)
        members, _ = members.sort(1)
        dup = torch.zeros_like(members, dtype=torch.bool)
        dup[:, 1:] = members[:, 1:] == members[:, :-1]
        parts.append(torch.where(dup, -1, members))
    members = torch.cat(parts)
    members, _ = members.sort(1, descending=True)  # valid first, then −1 padding
    width = int((members >= 0).sum(1).max()) if n else 0
    members = members[:, :width].flip(1)  # ascending, padding first
    valid = members >= 0
    counts = valid.sum(1)
    weight = torch.zeros(members.shape, device=dev)
    step = max(1, _BLOCK_BYTES // (src.pair_bytes * max(1, width)))
    for s in range(0, n, step):
        w = src.gather(s, members[s : s + step]) / scale[s : s + step, None]
        weight[s : s + step] = torch.where(valid[s : s + step], torch.exp(-w), 0)
    val = (weight / weight.sum(1, keepdim=True))[valid]
    col = members[valid]  # row-major: sorted within each row
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    crow[1:] = counts.cumsum(0)
    return crow, col, val


def _jaccard_rows(crow: Tensor, col: Tensor, val: Tensor, q: int, start: int, stop: int,
                  g_ptr: Tensor, g_row: Tensor, g_val: Tensor) -> Tensor:
    """Σ_k min(V′[i, k], V′[j, k]) for queries i in [start, stop) and every gallery item j, [b, G],
    from the query rows (CSR) and the gallery rows by column (CSC: g_ptr, g_row − q, g_val)."""
    g = int(crow.numel() - 1 - q)
    dev = val.device
    acc = torch.zeros((stop - start) * g, device=dev)
    lo, hi = int(crow[start]), int(crow[stop])
    rows = torch.arange(start, stop, device=dev).repeat_interleave(crow[start + 1 : stop + 1] - crow[start:stop])
    cols, vals = col[lo:hi], val[lo:hi]
    fan = g_ptr[cols + 1] - g_ptr[cols]  # gallery entries sharing each query entry's column
    ends = fan.cumsum(0)
    s = 0
    while s < cols.numel():  # chunks of about _TRIPLES (entry, gallery entry) pairs
        base = int(ends[s - 1]) if s else 0
        e = int(torch.searchsorted(ends, base + _TRIPLES, right=True))
        e = max(e, s + 1)
        f = fan[s:e]
        owner = torch.arange(s, e, device=dev).repeat_interleave(f)
        offset = torch.arange(int(f.sum()), device=dev) - (ends[s:e] - f - base).repeat_interleave(f)
        pos = g_ptr[cols[owner]] + offset
        target = (rows[owner] - start) * g + g_row[pos]
        acc.index_add_(0, target, torch.minimum(vals[owner], g_val[pos]))
        s = e
    return acc.view(stop - start, g)


def _merge(best_v: Tensor, best_i: Tensor, v: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """The smallest best_v.shape[1] of two (value, index) lists per row."""
    v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
    top_v, at = torch.topk(v, best_v.shape[1], dim=1, largest=False, sorted=False)
    return top_v, i.gather(1, at)


def _ranks_of_rows(src: SquaredRows, depth: int, qg: Tensor) -> tuple[Tensor, Tensor]:
    """Every row of Sᵀ: its first ``depth`` items (ascending) and its maximum, block by block; the
    query rows' gallery columns are kept in ``qg`` [Q, G] for the λ term."""
    n, dev = src.n, src.device
    q = qg.shape[0]
    block = max(1, _BLOCK_BYTES // (4 * n))
    rank = torch.empty(n, depth, dtype=torch.int64, device=dev)
    scale = torch.empty(n, device=dev)
    for s in range(0, n, block):
        e = min(n, s + block)
        rows = src.rows(s, e)
        if s < q:
            qg[s : min(e, q)] = rows[: min(e, q) - s, q:]
        scale[s:e] = rows.amax(1)
        rank[s:e] = torch.topk(rows, depth, dim=1, largest=False, sorted=True).indices
    return rank, scale


def _merge_below(best_v: Tensor, best_i: Tensor, block: Tensor, s: int) -> None:
    """In place: rows r of best_* take block[:, r] (items s + 0, 1, ...) where it beats their list.
    Only entries below a row's current worst can enter, and after the first block of a symmetric
    pass those are few (a row's near neighbours in one block of items), so they are gathered
    sparsely instead of by a column-wise top-k over the whole block."""
    worst = best_v.amax(1)
    at, r = (block < worst[None, :]).nonzero(as_tuple=True)
    if r.numel() == 0:
        return
    order = torch.argsort(r, stable=True)
    at, r = at[order], r[order]
    rows, where, counts = torch.unique_consecutive(r, return_inverse=True, return_counts=True)
    slot = torch.arange(r.numel(), device=r.device) - (torch.cumsum(counts, 0) - counts)[where]
    width = int(counts.max())
    v = torch.full((rows.numel(), width), float("inf"), device=block.device)
    i = torch.full((rows.numel(), width), -1, dtype=torch.int64, device=block.device)
    v[where, slot] = block[at, r]
    i[where, slot] = at + s
    best_v[rows], best_i[rows] = _merge(best_v[rows], best_i[rows], v, i)


def _ranks_symmetric(src: SquaredRows, depth: int, qg: Tensor) -> tuple[Tensor, Tensor]:
    """As :func:`_ranks_of_rows` for a symmetric S, at half the products: block I of rows is measured
    against items [I0, n) only, and serves the rows of I (row-wise) and the later rows (column-wise),
    whose running first-``depth`` lists and maxima are merged block by block."""
    n, dev = src.n, src.device
    q = qg.shape[0]
    block = max(1, min(n, 1024, _BLOCK_BYTES // (4 * n)))  # small blocks: the unshared part is n·block/2
    best_v = torch.full((n, depth), float("inf"), device=dev)
    best_i = torch.full((n, depth), -1, dtype=torch.int64, device=dev)
    scale = torch.full((n,), -float("inf"), device=dev)
    for s in range(0, n, block):
        e = min(n, s + block)
        p = src.rows(s, e, s)  # [b, n − s]: rows s..e against items s..n
        if s < q:  # query rows against every gallery item (q >= s: all in this product)
            qg[s : min(e, q)] = p[: min(e, q) - s, q - s :]
        k = min(depth, n - s)
        v, i = torch.topk(p, k, dim=1, largest=False, sorted=False)
        best_v[s:e], best_i[s:e] = _merge(best_v[s:e], best_i[s:e], v, i + s)
        scale[s:e] = torch.maximum(scale[s:e], p.amax(1))
        if e < n:
            later = p[:, e - s :]  # [b, n − e]: this block against the later rows, by columns
            if s == 0:  # the later rows' lists are still empty: a column-wise top-k fills them
                k = min(depth, e - s)
                v, i = torch.topk(later, k, dim=0, largest=False, sorted=False)
                best_v[e:], best_i[e:] = _merge(best_v[e:], best_i[e:], v.T, i.T + s)
            else:
                _merge_below(best_v[e:], best_i[e:], later, s)
            scale[e:] = torch.maximum(scale[e:], later.amax(0))
    order = torch.sort(best_v, dim=1, stable=True).indices
    return best_i.gather(1, order), scale


def re_rank_rows(src: SquaredRows, q: int, k1: int, k2: int, lambda_value: float, fn: str) -> Tensor:
    """The re-ranked [Q, G] distances of the first q items against the rest, from a source of Sᵀ rows."""
    n, dev = src.n, src.device
    depth = max(k1 + 1, k2)
    # W's row is S's row over a positive constant: a monotone map, so S's order is W's order
    out = torch.empty(q, n - q, device=dev)  # S of the query rows' gallery columns, then the result
    rank, scale = (_ranks_symmetric if src.symmetric else _ranks_of_rows)(src, depth, out)
    if not bool((scale > 0).all()):
        i = int((scale <= 0).nonzero()[0])
        raise ValueError(f"{fn}: every distance to item {i} is 0 (all items identical), so the column-max "
                         "normalisation of the method is undefined")
    crow, col, val = _encode(src, rank, scale, k1)
    if k2 != 1:
        zeros = torch.zeros(n, dtype=torch.int64, device=dev)
        crow, col, val = op("query_expansion")(crow, col, val, rank, zeros, zeros, k2, k2)
    # the gallery rows of V′ by column (CSC), for the query-row Jaccard
    row_of = torch.arange(n, device=dev).repeat_interleave(crow[1:] - crow[:-1])
    keep = row_of >= q
    g_col, g_row, g_val = col[keep], row_of[keep] - q, val[keep]
    order = torch.argsort(g_col, stable=True)
    g_col, g_row, g_val = g_col[order], g_row[order], g_val[order]
    g_ptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    g_ptr[1:] = torch.bincount(g_col, minlength=n).cumsum(0)
    qblock = max(1, _BLOCK_BYTES // (4 * max(1, n - q)))  # rows of the dense accumulator
    for s in range(0, q, qblock):
        e = min(q, s + qblock)
        m = _jaccard_rows(crow, col, val, q, s, e, g_ptr, g_row, g_val)
        # (1 − λ)·J + λ·W with J = 1 − m / (2 − m) = 2(1 − m) / (2 − m), in place on the [b, G] blocks
        jac = m.neg().add_(2)
        jac = m.sub_(1).mul_(-2 * (1 - lambda_value)).div_(jac)
        out[s:e].mul_(lambda_value).div_(scale[s:e, None]).add_(jac)
    return out
