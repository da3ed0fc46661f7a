"""k-reciprocal re-ranking: uvireid_ext.re_rank vs the classic NumPy function (our port,
uvireid_ext.reference.classic_rerank) after the distance matrices users compute with torch, same run.

    python -m uvireid_ext bench rerank [--sizes market,msmt] [--device cpu|cuda] [--no-baseline] [--out DIR]

Sizes are names (market: 3,368 queries x 15,913 gallery items, msmt: 11,659 x 82,161; D = 2,048, as
Market-1501 and MSMT17 with ResNet-50 features) or Q,G,D triples. The port builds several dense
(Q + G)^2 float32 matrices; it runs only where they fit (--max-baseline-gb), and its need is printed
either way. Every run is in a fresh process, so that its peak memory (VmHWM) is its own.

Writes <out>/rerank_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import argument_parser, in_process, line, peak_rss_gb, write  # noqa: E402

NAMED = {"market": (3368, 15913, 2048), "msmt": (11659, 82161, 2048)}
# the port's dense N x N arrays at its peak: the squared and normalised matrices, the int64 argsort
# and its int32 copy, V and V_qe, and the user's three distance matrices (about N^2 in all)
PORT_BYTES_PER_PAIR = 4 + 4 + 8 + 4 + 4 + 4 + 4


def parser() -> argparse.ArgumentParser:
    p = argument_parser(__doc__)
    p.add_argument("--sizes", default="market,msmt", help="comma-separated names or Q,G,D triples separated by ';'")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where re_rank runs")
    p.add_argument("--k1", type=int, default=20, help="k-reciprocal neighbourhood")
    p.add_argument("--k2", type=int, default=6, help="query expansion")
    p.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, help="weight of the original distance")
    p.add_argument("--ids", type=int, default=1500, help="identities the synthetic features are drawn around")
    p.add_argument("--no-baseline", action="store_true", help="skip the NumPy port everywhere")
    p.add_argument("--max-baseline-gb", type=float, default=16.0,
                   help="run the port only where its dense matrices need at most this much memory")
    return p


def sizes(spec: str) -> list[tuple[str, int, int, int]]:
    """``market,msmt`` (names) and Q,G,D triples, parts separated by ';'."""
    out = []
    for part in spec.split(";"):
        items = [i.strip() for i in part.split(",")]
        if all(i in NAMED for i in items):
            out += [(i, *NAMED[i]) for i in items]
        elif len(items) == 3 and all(i.isdigit() for i in items):
            q, g, d = (int(i) for i in items)
            out.append((f"{q}x{g}", q, g, d))
        else:
            raise SystemExit(f"bench rerank: --sizes part {part!r} is neither names ({', '.join(NAMED)}) nor Q,G,D")
    return out


def features(q: int, g: int, dim: int, ids: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features around ``ids`` identity centres, as a re-ID network gives."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(ids, dim, generator=gen)
    x = centres[torch.randint(0, ids, (q + g,), generator=gen)] + 0.9 * torch.randn(q + g, dim, generator=gen)
    x = torch.nn.functional.normalize(x, dim=1)
    return x[:q].to(device), x[q:].to(device)


def _ours(q: int, g: int, dim: int, ids: int, device: str, k1: int, k2: int, lam: float, queue) -> None:
    import uvireid_ext

    qf, gf = features(q, g, dim, ids, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = uvireid_ext.re_rank(qf, gf, k1, k2, lam)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    res = {"seconds": seconds, "peak_gb": peak_rss_gb()}
    if device == "cuda":
        res["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    res["sample"] = out[:: max(1, q // 64)].cpu().numpy()
    queue.put(res)


def _port(q: int, g: int, dim: int, ids: int, k1: int, k2: int, lam: float, queue) -> None:
    from uvireid_ext.reference.classic_rerank import classic_re_ranking

    qf, gf = features(q, g, dim, ids, "cpu")
    t = time.perf_counter()
    # what users run: torch distance matrices (plain Euclidean), then the NumPy function
    mats = [torch.cdist(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    out = classic_re_ranking(*mats, k1, k2, lam)
    queue.put({"seconds": time.perf_counter() - t, "peak_gb": peak_rss_gb(), "sample": out[:: max(1, q // 64)]})


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    rows = []
    for name, q, g, dim in sizes(args.sizes):
        n = q + g
        port_gb = n * n * PORT_BYTES_PER_PAIR / 2**30
        ours = in_process(_ours, q, g, dim, args.ids, args.device, args.k1, args.k2, args.lambda_value)
        row = {"size": name, "Q": q, "G": g, "D": dim, "ours_s": round(ours["seconds"], 2),
               "ours_peak_gb": round(ours["peak_gb"], 2), "port_need_gb": round(port_gb, 1)}
        if "gpu_peak_gb" in ours:
            row["ours_gpu_peak_gb"] = round(ours["gpu_peak_gb"], 2)
        if args.no_baseline or port_gb > args.max_baseline_gb:
            row.update(port_s="not run", speedup="-", max_abs_diff="-")
        else:
            port = in_process(_port, q, g, dim, args.ids, args.k1, args.k2, args.lambda_value)
            diff = np.abs(ours["sample"] - port["sample"])
            row.update(port_s=round(port["seconds"], 2), port_peak_gb=round(port["peak_gb"], 2),
                       speedup=round(port["seconds"] / ours["seconds"], 1), max_abs_diff=f"{diff.max():.1e}",
                       share_above_1e5=f"{(diff > 1e-5).mean():.1e}")
        rows.append(row)
        print(line(row), flush=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    for r in rows:
        for c in columns:
            r.setdefault(c, "-")
    write(args.out, "rerank", args.device, rows, columns)


if __name__ == "__main__":
    main()
