"""SYSU-MM01 / RegDB metrics: CMC, mAP, mINP with the semantics of the standard (AGW) code, vectorised
in torch (CPU or GPU), and their mean over trials. Feature extraction is ``uvireid_ext.features``'s, the
protocols (trials, query / gallery) ``uvireid_ext.protocol``'s.

Semantics (``docs/protocols.md``, metrics):

- rank gallery items by ascending distance; ties are broken by gallery index (a stable sort; the
  standard code's unstable quicksort has no reproducible tie order, so this is the documented choice);
- SYSU: a query from camera 3 ignores *every* gallery image from camera 2 (same location), whatever its
  identity; nothing else is removed. RegDB: nothing is removed;
- CMC: SYSU identity-level (only the first occurrence of each identity in the ranked list counts; option
  ``image_cmc=True`` gives the image-level one), RegDB image-level; truncated at ``max_rank`` (reduced to the
  gallery size when smaller), summed over queries and divided by the number of valid queries;
- AP over all matches of the kept list, no truncation; INP = number of matches / 1-based rank of the last one;
- a query with no match in its kept list is skipped (not in mAP/mINP, not in the divisor) and counted.

Algorithm (no full row sort, which would dominate at 10k x 10k): a query's positives are gathered
from a per-identity table of gallery indices and sorted (a handful per query); every kept gallery item
is bucketed by how many positives precede it (``searchsorted``, ties fixed by index); the rank of the
t-th positive is the number of items in buckets 0..t, and the identity-level rank is the number of
distinct identities in bucket 0. Cost: about ten passes over the distance matrix, in cache-sized chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "EvalResult",
    "average_trials",
    "eval_regdb",
    "eval_sysu",
    "pairwise_distance",
    "rank_metrics",
]

# Queries are processed in chunks of about this many distmat entries: bounds memory and keeps the
# dozen passes over each chunk in cache (measured faster than larger chunks on CPU).
_CHUNK_ELEMENTS = 1 << 18


class EvalResult(tuple):
    """``(cmc, mAP, mINP)``: unpacks as the standard 3-tuple and also carries the query counts.

    cmc: float64 CPU tensor of length max_rank (fractions, not percent); mAP, mINP: Python floats.
    ``num_valid``: queries with at least one match (the divisor); ``num_query``: all queries.
    """

    num_valid: int
    num_query: int

    def __new__(
        cls, cmc: torch.Tensor, mAP: float, mINP: float, num_valid: int, num_query: int
    ) -> EvalResult:
        self = super().__new__(cls, (cmc, mAP, mINP))
        self.num_valid = num_valid
        self.num_query = num_query
        return self

    @property
    def cmc(self) -> torch.Tensor:
        return self[0]

    @property
    def mAP(self) -> float:  # noqa: N802  (the name everybody uses)
        return self[1]

    @property
    def mINP(self) -> float:  # noqa: N802
        return self[2]

    @property
    def num_skipped(self) -> int:
        return self.num_query - self.num_valid

    def summary(self, ranks: Sequence[int] = (1, 5, 10, 20)) -> str:
        """One line in percent, e.g. ``R1 61.60 R5 ... mAP 57.90 mINP 40.10 (valid 3803/3803)``."""
        parts = [f"R{r} {100 * float(self.cmc[r - 1]):.2f}" for r in ranks if r <= len(self.cmc)]
        parts += [f"mAP {100 * self.mAP:.2f}", f"mINP {100 * self.mINP:.2f}"]
        return " ".join(parts) + f" (valid queries {self.num_valid}/{self.num_query})"


def _as_tensor(x: Any, name: str, op: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1:
        raise ValueError(f"{op}: {name} must be 1-D, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{op}: {name} must hold integer ids, got dtype {t.dtype}")
    return t


def _check_inputs(
    op: str, distmat: Any, q_pids: Any, g_pids: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = torch.as_tensor(distmat)
    if d.dim() != 2:
        raise ValueError(f"{op}: distmat must be 2-D (num_query x num_gallery), got shape {tuple(d.shape)}")
    if not d.dtype.is_floating_point:
        raise ValueError(f"{op}: distmat must be floating point, got dtype {d.dtype}")
    q = _as_tensor(q_pids, "q_pids", op).to(d.device, torch.int64)
    g = _as_tensor(g_pids, "g_pids", op).to(d.device, torch.int64)
    num_q, num_g = d.shape
    if q.numel() != num_q or g.numel() != num_g:
        raise ValueError(
            f"{op}: distmat shape {tuple(d.shape)} does not match len(q_pids)={q.numel()} "
            f"and len(g_pids)={g.numel()}"
        )
    if num_g == 0:
        raise ValueError(f"{op}: empty gallery (distmat shape {tuple(d.shape)})")
    if num_q == 0:
        raise ValueError(f"{op}: no queries (distmat shape {tuple(d.shape)})")
    # One fast reduction; NaN/Inf propagate into the sum (an overflowing sum falls through to the
    # exact check, which then finds nothing).
    bad = ~torch.isfinite(d) if not bool(torch.isfinite(d.sum())) else None
    if bad is not None and bool(bad.any()):
        r, c = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{op}: distmat holds {int(bad.sum())} non-finite value(s) (NaN/Inf); first at "
            f"[{r}, {c}] = {float(d[r, c])}"
        )
    return d, q, g


def _check_max_rank(op: str, max_rank: int) -> None:
    if not isinstance(max_rank, int) or max_rank < 1:
        raise ValueError(f"{op}: max_rank must be an int >= 1, got {max_rank!r}")


def _positive_table(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gallery ids -> (sorted unique ids, per id the gallery indices holding it in ascending order padded
    with G (num_ids x max_count), per gallery item its id's index)."""
    uniq, code, counts = torch.unique(g, return_inverse=True, return_counts=True)
    order = torch.argsort(code, stable=True)  # gallery indices grouped by id, ascending within an id
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(g.numel(), device=g.device) - starts[code[order]]
    table = torch.full((uniq.numel(), int(counts.max())), g.numel(), dtype=torch.int64, device=g.device)
    table[code[order], slot] = order
    return uniq, table, code


def _chunk_ranks(
    dist: torch.Tensor, pos_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For C queries: ``dist`` (C x G) with dropped gallery items set to +inf, ``pos_idx`` (C x P) the
    gallery indices of each query's identity, ascending, padded with G. Returns the 1-based ranks of the
    positives in the kept list (C x P, sorted, valid for t < n), n (C), and per gallery item how many
    positives rank strictly before it (C x G): 0 marks the items up to and including the first positive."""
    c_rows, num_g = dist.shape
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    padded = pos_idx >= num_g
    pos_d = torch.where(padded, inf, dist.gather(1, pos_idx.clamp(max=num_g - 1)))
    n = torch.isfinite(pos_d).sum(1)  # dropped positives are +inf like the padding
    # Order positives by (distance, gallery index): indices are ascending, so a stable sort by distance.
    pos_d, o = torch.sort(pos_d, dim=1, stable=True)
    pos_i = pos_idx.gather(1, o)
    p_max = pos_d.shape[1]
    # Items (positives included) bucketed by the number of positives with a smaller distance ...
    bucket = torch.searchsorted(pos_d, dist)
    # ... then equal distances: a tied positive precedes the item iff its gallery index is smaller.
    tied = (pos_d.gather(1, bucket.clamp(max=p_max - 1)) == dist) & (bucket < n[:, None])
    rows, cols = tied.nonzero(as_tuple=True)
    if rows.numel():
        start = bucket[rows, cols]
        ahead = start[:, None] + torch.arange(p_max, device=dist.device)[None, :]
        cand = ahead.clamp(max=p_max - 1)
        same = (pos_d[rows[:, None], cand] == dist[rows, cols][:, None]) & (ahead < n[rows, None])
        bucket[rows, cols] = start + (same & (pos_i[rows[:, None], cand] < cols[:, None])).sum(1)
    # rank of positive t = number of kept items with key <= its key = items in buckets 0..t
    # (dropped items have distance +inf, so their bucket is n: never counted for t < n).
    counts = torch.zeros(c_rows, p_max + 1, dtype=torch.int64, device=dist.device)
    counts.scatter_add_(1, bucket, torch.ones(1, dtype=torch.int64, device=dist.device).expand_as(bucket))
    ranks = counts[:, :p_max].cumsum(1)
    return ranks, n, bucket


@dataclass
class RankMetrics:
    """Per-query outputs of :func:`rank_metrics` (all on CPU).

    first_rank: 1-based rank of the first match (identity-level or image-level as requested), 0 if none;
    ap, inp: per-query AP and INP (NaN for queries without a match); valid: queries with a match;
    num_gallery: gallery size.
    """

    first_rank: torch.Tensor
    ap: torch.Tensor
    inp: torch.Tensor
    valid: torch.Tensor
    num_gallery: int

    def result(self, max_rank: int) -> EvalResult:
        num_valid = int(self.valid.sum())
        if num_valid == 0:
            raise ValueError("no query has a match in its gallery (all queries skipped)")
        hits = self.first_rank[(self.first_rank >= 1) & (self.first_rank <= max_rank)]
        cmc = torch.bincount(hits - 1, minlength=max_rank).cumsum(0).double() / num_valid
        m_ap = float(self.ap[self.valid].double().mean())
        m_inp = float(self.inp[self.valid].double().mean())
        return EvalResult(cmc, m_ap, m_inp, num_valid, int(self.valid.numel()))


def rank_metrics(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    *,
    identity_cmc: bool = False,
    op: str = "rank_metrics",
) -> RankMetrics:
    """Per-query ranking metrics. With cameras given, the SYSU rule applies (camera-3 queries drop every
    camera-2 gallery item). ``identity_cmc`` selects the identity-level first-match rank."""
    d, q, g = _check_inputs(op, distmat, q_pids, g_pids)
    num_q, num_g = d.shape
    drop: torch.Tensor | None = None
    if q_camids is not None or g_camids is not None:
        if q_camids is None or g_camids is None:
            raise ValueError(f"{op}: give both q_camids and g_camids or neither")
        qc = _as_tensor(q_camids, "q_camids", op).to(d.device)
        gc = _as_tensor(g_camids, "g_camids", op).to(d.device)
        if qc.numel() != num_q or gc.numel() != num_g:
            raise ValueError(
                f"{op}: distmat shape {tuple(d.shape)} does not match len(q_camids)={qc.numel()} "
                f"and len(g_camids)={gc.numel()}"
            )
        q_cam3, g_cam2 = qc == 3, gc == 2
        drop = q_cam3 if bool(g_cam2.any()) else None
    uniq, table, g_code = _positive_table(g)
    # Each query's positives: the gallery indices of its id (none when the id is not in the gallery).
    at = torch.searchsorted(uniq, q).clamp(max=uniq.numel() - 1)
    q_pos = torch.where((uniq[at] == q)[:, None], table[at], num_g)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)

    first = torch.zeros(num_q, dtype=torch.int64)
    ap = torch.full((num_q,), float("nan"), dtype=torch.float64)
    inp = torch.full((num_q,), float("nan"), dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // num_g)
    for a in range(0, num_q, step):
        b = min(num_q, a + step)
        dist = d[a:b]
        if drop is not None and bool(drop[a:b].any()):
            dist = torch.where(drop[a:b, None] & g_cam2[None, :], inf, dist)
        ranks, n, bucket = _chunk_ranks(dist, q_pos[a:b])
        valid = n > 0
        t = torch.arange(ranks.shape[1], device=d.device)
        real = t[None, :] < n[:, None]
        prec = torch.where(real, (t[None, :] + 1).double() / ranks.double(), 0.0)
        nf = n.double()
        last = ranks.gather(1, (n - 1).clamp(min=0)[:, None])[:, 0]
        ap[a:b] = torch.where(valid, prec.sum(1) / nf.clamp(min=1), float("nan")).cpu()
        inp[a:b] = torch.where(valid, nf / last.double(), float("nan")).cpu()
        if identity_cmc:
            # Distinct identities among the kept items up to the first match (its own id included).
            seen = torch.zeros(b - a, uniq.numel(), dtype=torch.int32, device=d.device)
            seen.scatter_add_(1, g_code.expand(b - a, num_g), (bucket == 0).int())
            fr = (seen > 0).sum(1)
        else:
            fr = ranks[:, 0]
        first[a:b] = torch.where(valid, fr, 0).cpu()
    return RankMetrics(first, ap, inp, first > 0, num_g)


def eval_sysu(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 20,
    *,
    image_cmc: bool = False,
) -> EvalResult:
    """SYSU-MM01 metrics with the standard semantics (see the module docstring).

    distmat: (Q, G) float distances, smaller = closer (the standard code passes -q·g of L2-normalised
    features); q_pids (Q,), g_pids (G,), q_camids (Q,), g_camids (G,): integer ids, SYSU camera numbers 1..6.
    Tensors (any device; the work runs there) or numpy arrays. Returns ``EvalResult`` = (cmc, mAP, mINP),
    cmc identity-level unless ``image_cmc``.
    """
    _check_max_rank("eval_sysu", max_rank)
    m = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, identity_cmc=not image_cmc, op="eval_sysu")
    try:
        return m.result(min(max_rank, m.num_gallery))
    except ValueError as e:
        raise ValueError(f"eval_sysu: {e}") from None


def eval_regdb(distmat: Any, q_pids: Any, g_pids: Any, max_rank: int = 20) -> EvalResult:
    """RegDB metrics: no camera filtering, image-level CMC (see the module docstring).

    distmat: (Q, G) float distances; q_pids (Q,), g_pids (G,) integer ids. Returns (cmc, mAP, mINP).
    """
    _check_max_rank("eval_regdb", max_rank)
    m = rank_metrics(distmat, q_pids, g_pids, op="eval_regdb")
    try:
        return m.result(min(max_rank, m.num_gallery))
    except ValueError as e:
        raise ValueError(f"eval_regdb: {e}") from None


def average_trials(results: Sequence[EvalResult]) -> EvalResult:
    """Plain mean over trials of the per-trial CMC, mAP and mINP (what the standard test scripts do).
    ``num_valid``/``num_query`` are the per-trial means (equal across trials for SYSU and RegDB)."""
    if not results:
        raise ValueError("average_trials: no results")
    lengths = {len(r.cmc) for r in results}
    if len(lengths) != 1:
        raise ValueError(f"average_trials: CMC lengths differ across trials: {sorted(lengths)}")
    k = len(results)
    cmc = torch.stack([r.cmc for r in results]).sum(0) / k
    return EvalResult(
        cmc,
        sum(r.mAP for r in results) / k,
        sum(r.mINP for r in results) / k,
        round(sum(r.num_valid for r in results) / k),
        round(sum(r.num_query for r in results) / k),
    )


def pairwise_distance(query_feat: torch.Tensor, gallery_feat: torch.Tensor) -> torch.Tensor:
    """The standard distance: minus the inner product (features are L2-normalised by the caller/model)."""
    return -(query_feat @ gallery_feat.T)
