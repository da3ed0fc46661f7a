"""Distance pipeline (kNN, k-reciprocal encoding, query expansion, Jaccard) against the classic
NumPy port (uvireid_ext/reference/classic_jaccard.py), measured in the same run.

    python -m uvireid_ext bench distance                         # CPU: N = 2k, 5k, 10k, 20k, D = 2048
    python -m uvireid_ext bench distance --sizes 2000            # the short run
    python -m uvireid_ext bench distance --device cuda --sizes 34000,100000,200000,1000000 --no-baseline
    python -m uvireid_ext bench distance --candidates bf16,fp64 --noise 0.3  # kNN tiers, tighter identities

The kNN alone is also timed (best of --repeats) against faiss's exact IndexFlatL2 search (the CPU path
of cluster-contrast; `pip install faiss-cpu`, skipped with a note when absent) and against one plain
float32 GEMM x @ x.T of the same size, the work faiss itself cannot avoid; faiss_rows_off is the share
of rows whose faiss neighbour list differs from the exact one.

Each (implementation, N) runs in its own process, so peak RSS (and on CUDA peak GPU memory) belongs
to that run alone, and each call is a first call, as a user's first epoch sees it. The pipeline runs
--runs times for ours and for the port, alternately (a fresh process each time, so a slow spell of
the machine hits both); the table gives the median of each stage, the ratio of the median totals,
and speedup_total_range, the lowest and highest ratio of one run to its pair. Ours is the sparse
path (max_distance = eps, what DBSCAN needs); the port builds the dense N×N matrices as users run it
today. Writes <out>/<name>_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def features(n: int, d: int, seed: int = 0, noise: float = 0.8):
    """Clustered unit features: about 20 samples per identity around random centres (smaller noise,
    tighter identities)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, n // 20), d, generator=g)
    x = centres[torch.randint(0, centres.shape[0], (n,), generator=g)] + noise * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def run_ours(n: int, d: int, k1: int, k2: int, eps: float, device: str, candidates: str, noise: float, out) -> None:
    import torch
    from _report import peak_rss_gb

    from uvireid_ext.ops import op

    x = features(n, d, noise=noise).to(device)
    zeros = torch.zeros(n, dtype=torch.int64, device=device)

    def sync() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    if device == "cuda":  # warm-up: CUDA context, cuBLAS handles, allocator
        small = x[: min(n, 2048)]
        r, rd = op("knn")(small, k1, candidates)
        v = op("k_reciprocal_encode")(small, r, rd, k1)
        op("jaccard_sparse")(*op("query_expansion")(*v, r, zeros[: len(small)], zeros[: len(small)], k2, k2), eps)
        torch.cuda.reset_peak_memory_stats()
    t0 = sync()
    rank, rank_dist = op("knn")(x, k1, candidates)
    t1 = sync()
    v = op("k_reciprocal_encode")(x, rank, rank_dist, k1)
    t2 = sync()
    q = op("query_expansion")(*v, rank, zeros, zeros, k2, k2)
    t3 = sync()
    s = op("jaccard_sparse")(*q, eps)
    t4 = sync()
    out.put(dict(
        knn_s=t1 - t0, encode_s=t2 - t1, expand_s=t3 - t2, jaccard_s=t4 - t3,
        nnz_v=int(v[1].numel()), nnz_qe=int(q[1].numel()), nnz_out=int(s[1].numel()),
        peak_rss_gb=peak_rss_gb(),
        peak_gpu_gb=(torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else None,
    ))


def sig(v: float) -> float:
    """4 significant digits: at small sizes a timing is well under a millisecond."""
    return float(f"{v:.4g}")


def run_knn_baselines(n: int, d: int, k: int, noise: float, repeats: int, out) -> None:
    """kNN alone: ours, faiss IndexFlatL2 (when installed) and a plain float32 GEMM, best of `repeats`."""
    import torch

    from uvireid_ext.ops import op

    x = features(n, d, noise=noise)

    def best(f):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = f()
            times.append(time.perf_counter() - t0)
        return min(times), r

    ours_s, (rank, _) = best(lambda: op("knn")(x, k, "bf16"))
    gemm_s, _ = best(lambda: x @ x.T)
    res = dict(knn_best_s=ours_s, gemm_s=gemm_s, faiss_s=None, faiss_rows_off=None)
    try:
        import faiss
    except ImportError:
        print("faiss is not installed (pip install faiss-cpu): no faiss column", flush=True)
    else:
        faiss.omp_set_num_threads(torch.get_num_threads())
        xn = x.numpy()

        def search():
            index = faiss.IndexFlatL2(d)
            index.add(xn)
            return index.search(xn, k)[1]

        res["faiss_s"], fi = best(search)
        res["faiss_rows_off"] = (torch.from_numpy(fi) != rank).any(dim=1).double().mean().item()
    out.put(res)


def run_classic(n: int, d: int, k1: int, k2: int, noise: float, out) -> None:
    from _report import peak_rss_gb

    from uvireid_ext.reference.classic_jaccard import encode, expand, initial_rank, jaccard

    x = features(n, d, noise=noise).numpy()
    t0 = time.perf_counter()
    rank = initial_rank(x, k1)
    t1 = time.perf_counter()
    v = encode(x, rank, k1)
    t2 = time.perf_counter()
    v = expand(v, rank, k2)
    t3 = time.perf_counter()
    jaccard(v)
    t4 = time.perf_counter()
    out.put(dict(knn_s=t1 - t0, encode_s=t2 - t1, expand_s=t3 - t2, jaccard_s=t4 - t3,
                 peak_rss_gb=peak_rss_gb()))


def parser() -> argparse.ArgumentParser:
    from _report import argument_parser

    p = argument_parser(__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where our ops run")
    p.add_argument("--sizes", default="2000,5000,10000,20000", help="numbers of features N, comma separated")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension D")
    p.add_argument("--k1", type=int, default=30, help="k-reciprocal neighbourhood")
    p.add_argument("--k2", type=int, default=6, help="query-expansion neighbours")
    p.add_argument("--eps", type=float, default=0.6, help="our sparse output keeps the pairs d <= eps")
    p.add_argument("--candidates", default="bf16",
                   help="knn candidate tiers to time, comma separated: bf16 and/or fp64")
    p.add_argument("--noise", type=float, default=0.8, help="feature noise around identity centres")
    p.add_argument("--no-baseline", action="store_true", help="skip the classic port (large N)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the kNN-alone timings (best is kept)")
    p.add_argument("--runs", type=int, default=3,
                   help="fresh-process runs of the pipeline, ours and the port alternately (medians are kept)")
    p.add_argument("--name", default="distance", help="results file name: <out>/<name>_<device>.{json,md}")
    return p


STAGES = ("knn_s", "encode_s", "expand_s", "jaccard_s")


def medians(runs: list[dict]) -> dict:
    """The first run's counts, the median of every stage time over the runs, the highest peak memory."""
    out = dict(runs[0])
    for key in STAGES:
        out[key] = statistics.median(r[key] for r in runs)
    for key in ("peak_rss_gb", "peak_gpu_gb"):
        if out.get(key) is not None:
            out[key] = max(r[key] for r in runs)
    return out


def total(run: dict) -> float:
    return sum(run[key] for key in STAGES)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")

    from _report import in_process, line, write

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        classic_runs: list[dict] = []  # the port's runs, made beside the first tier's
        for t, candidates in enumerate(args.candidates.split(",")):
            ours_runs = []
            for _ in range(args.runs):
                ours_runs.append(in_process(run_ours, n, args.dim, args.k1, args.k2, args.eps, args.device,
                                            candidates, args.noise))
                if t == 0 and not args.no_baseline:
                    classic_runs.append(in_process(run_classic, n, args.dim, args.k1, args.k2, args.noise))
            ours = medians(ours_runs)
            after_knn = ours["encode_s"] + ours["expand_s"] + ours["jaccard_s"]
            row = dict(N=n, D=args.dim, noise=args.noise, candidates=candidates, knn_s=round(ours["knn_s"], 3),
                       encode_s=round(ours["encode_s"], 3), expand_s=round(ours["expand_s"], 3),
                       jaccard_s=round(ours["jaccard_s"], 3), after_knn_s=round(after_knn, 3),
                       total_s=round(total(ours), 3), peak_rss_gb=round(ours["peak_rss_gb"], 2),
                       nnz_per_row=round(ours["nnz_qe"] / n, 1),
                       pairs_within_eps_per_row=round(ours["nnz_out"] / n, 1))
            if t == 0 and args.device == "cpu":
                b = in_process(run_knn_baselines, n, args.dim, args.k1, args.noise, args.repeats)
                row.update(knn_best_s=sig(b["knn_best_s"]), gemm_s=sig(b["gemm_s"]),
                           knn_vs_gemm=round(b["gemm_s"] / b["knn_best_s"], 2))
                if b["faiss_s"] is not None:
                    row.update(faiss_s=sig(b["faiss_s"]), knn_vs_faiss=round(b["faiss_s"] / b["knn_best_s"], 2),
                               faiss_rows_off=round(b["faiss_rows_off"], 4))
            if ours["peak_gpu_gb"] is not None:
                row["peak_gpu_gb"] = round(ours["peak_gpu_gb"], 2)
            if not args.no_baseline:
                c = medians(classic_runs)
                c_after = c["encode_s"] + c["expand_s"] + c["jaccard_s"]
                paired = [total(cr) / total(o) for cr, o in zip(classic_runs, ours_runs, strict=True)]
                row.update(classic_knn_s=round(c["knn_s"], 3), classic_after_knn_s=round(c_after, 3),
                           classic_peak_rss_gb=round(c["peak_rss_gb"], 2),
                           speedup_after_knn=round(c_after / after_knn, 1),
                           speedup_total=round(total(c) / total(ours), 2),
                           speedup_total_range=f"{min(paired):.1f}-{max(paired):.1f}",
                           memory_ratio=round(c["peak_rss_gb"] / ours["peak_rss_gb"], 1))
            row["runs"] = args.runs
            rows.append(row)
            print(line(row), flush=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write(args.out, args.name, args.device, rows, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
