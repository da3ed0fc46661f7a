"""Clustering benchmarks, ratios against baselines measured in the same run.

  kmeans    segmented_kmeans (all clusters in one call) vs MMM's per-cluster scikit-learn KMeans loop
            (n_init=10 as with MMM's pinned scikit-learn 1.3.2, and n_init=1 = today's "auto"),
            at SYSU-like cluster counts (default 400 clusters x 2 modalities, D=2048).
  dbscan    dbscan op on the sparse graph (pairs d <= eps) vs scikit-learn DBSCAN on the dense
            matrix, on classic Jaccard distances of synthetic identities.
  pipeline  features -> labels: uvireid_ext (jaccard_distance sparse + dbscan) vs the classic path
            (dense numpy Jaccard port + scikit-learn DBSCAN); needs uvireid_ext.jaccard_distance.

    python -m uvireid_ext bench cluster [--device cpu|cuda] [--what kmeans,dbscan,pipeline] [--quick] [--out DIR]

Writes <out>/cluster_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import uvireid_ext  # noqa: E402
from bench._report import argument_parser, line, save  # noqa: E402
from bench.baselines.sklearn_kmeans_loop import kmeans_loop  # noqa: E402
from uvireid_ext.ops import sparse_csr  # noqa: E402
from uvireid_ext.ops.cluster import dbscan, segmented_kmeans  # noqa: E402
from uvireid_ext.reference.classic_jaccard import classic_jaccard, classic_labels  # noqa: E402


def timed(fn: Callable[[], object], device: str, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` runs (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def identities(n: int, ids: int, dim: int, seed: int, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Unit features of `ids` synthetic identities (uneven sizes), like flip-averaged BN features."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((ids, dim)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    pid = rng.integers(0, ids, n)
    x = protos[pid] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim) * 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), pid


def bench_kmeans(device: str, clusters: int, dim: int, quick: bool) -> list[dict]:
    rows = []
    for name, per in (("visible", 55), ("infrared", 30)):  # SYSU: 22k RGB, 12k IR images, ~400 ids
        rng = np.random.default_rng(1)
        sizes = np.maximum(rng.poisson(per, clusters), 1)
        labels = np.repeat(np.arange(clusters), sizes)
        rng.shuffle(labels)
        protos = rng.standard_normal((clusters, dim)).astype(np.float32)
        x = protos[labels] + rng.standard_normal((labels.size, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        xt, lt = torch.from_numpy(x).to(device), torch.from_numpy(labels).to(device)
        segmented_kmeans(xt[:100], lt[:100], 4, num_clusters=clusters)  # warm-up (CUDA context, threads)
        t_ours, (cen, _) = timed(
            lambda xt=xt, lt=lt: segmented_kmeans(xt, lt, 4, num_clusters=clusters), device, repeat=2
        )
        row = {"set": name, "N": int(labels.size), "clusters": clusters, "dim": dim, "n": 4, "ours_s": t_ours}
        for n_init in [1] if quick else [10, 1]:
            t_sk, sk = timed(
                lambda n_init=n_init, x=x, labels=labels: kmeans_loop(x, labels, 4, n_init=n_init), "cpu"
            )
            row[f"sklearn_n_init{n_init}_s"] = t_sk
            row[f"speedup_vs_n_init{n_init}"] = t_sk / t_ours
        # Quality check: within-cluster squared error of both (ours should be comparable).
        row["inertia_ours"] = _inertia(x, labels, cen.cpu().numpy())
        row["inertia_sklearn"] = _inertia(x, labels, sk)
        rows.append(row)
        print(line(row), flush=True)
    return rows


def _inertia(x: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    d = ((x[:, None, :] - centers[labels]) ** 2).sum(-1).min(1)
    return float(d.sum())


def bench_dbscan(device: str, sizes: list[int], eps: float) -> list[dict]:
    from sklearn.cluster import DBSCAN

    rows = []
    for n in sizes:
        x, _ = identities(n, max(n // 25, 2), 128, seed=n)
        t_jac, dense = timed(lambda x=x: classic_jaccard(x, 30, 6), "cpu")
        keep = dense <= eps
        rows_i, cols_i = np.nonzero(keep)
        crow = np.zeros(n + 1, dtype=np.int64)
        crow[1:] = np.cumsum(np.bincount(rows_i, minlength=n))
        csr = sparse_csr(*(torch.from_numpy(a).to(device) for a in (crow, cols_i, dense[rows_i, cols_i])))
        dbscan(csr, eps, 4)
        t_ours, ours = timed(lambda csr=csr: dbscan(csr, eps, 4), device, repeat=3)
        t_sk, sk = timed(
            lambda dense=dense: DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(
                dense
            ),
            "cpu",
        )
        o = ours.cpu().numpy()
        same_noise = bool(((o < 0) == (sk < 0)).all())
        row = {
            "N": n,
            "nnz_le_eps": int(keep.sum()),
            "ours_s": t_ours,
            "sklearn_dense_s": t_sk,
            "speedup": t_sk / t_ours,
            "clusters": int(o.max() + 1),
            "same_noise_as_sklearn": same_noise,
            "classic_jaccard_s": t_jac,
        }
        rows.append(row)
        print(line(row), flush=True)
    return rows


def _pipeline_ours(n: int, eps: float, device: str, out) -> None:  # noqa: ANN001  (a multiprocessing queue)
    from bench._report import peak_rss_gb

    x, _ = identities(n, max(n // 25, 2), 2048, seed=n)
    xt = torch.from_numpy(x).to(device)

    def ours() -> torch.Tensor:
        return dbscan(uvireid_ext.jaccard_distance(xt, 30, 6, max_distance=eps), eps, 4)

    ours()  # warm-up (and CUDA context)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t, lab = timed(ours, device, repeat=2)
    out.put({"s": t, "labels": lab.cpu().numpy(),
             "peak_rss_gb": peak_rss_gb(),
             "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})


def _pipeline_classic(n: int, eps: float, out) -> None:  # noqa: ANN001
    from bench._report import peak_rss_gb

    x, _ = identities(n, max(n // 25, 2), 2048, seed=n)
    t, lab = timed(lambda: classic_labels(x, 30, 6, eps), "cpu")
    out.put({"s": t, "labels": lab, "peak_rss_gb": peak_rss_gb()})


def bench_pipeline(device: str, sizes: list[int], eps: float) -> list[dict]:
    """Features -> labels, each run in its own process so that its peak memory is its own."""
    from sklearn.metrics import adjusted_rand_score

    from bench._report import in_process

    rows = []
    for n in sizes:
        ours = in_process(_pipeline_ours, n, eps, device)
        classic = in_process(_pipeline_classic, n, eps)
        o, c = ours["labels"], classic["labels"]
        row = {"N": n, "ours_s": round(ours["s"], 3), "classic_s": round(classic["s"], 2),
               "speedup": round(classic["s"] / ours["s"], 1), "ours_peak_rss_gb": round(ours["peak_rss_gb"], 2),
               "classic_peak_rss_gb": round(classic["peak_rss_gb"], 2),
               "memory_ratio": round(classic["peak_rss_gb"] / ours["peak_rss_gb"], 1),
               "same_noise_as_classic": bool(((o < 0) == (c < 0)).all()),
               "ari_vs_classic": round(float(adjusted_rand_score(c, o)), 4)}
        if ours["peak_gpu_gb"] is not None:
            row["ours_peak_gpu_gb"] = round(ours["peak_gpu_gb"], 2)
        rows.append(row)
        print(line(row), flush=True)
    return rows


def parser() -> argparse.ArgumentParser:
    p = argument_parser(__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where our ops run")
    p.add_argument("--what", default="kmeans,dbscan,pipeline", help="benchmarks to run, comma separated")
    p.add_argument("--clusters", type=int, default=400, help="kmeans: clusters per modality")
    p.add_argument("--dim", type=int, default=2048, help="kmeans: feature dimension")
    p.add_argument("--dbscan-sizes", default="1000,2000", help="dbscan: numbers of points, comma separated")
    p.add_argument("--pipeline-sizes", default="2000,5000,10000,20000",
                   help="pipeline: numbers of features, comma separated")
    p.add_argument("--eps", type=float, default=0.6, help="dbscan and pipeline: DBSCAN radius")
    p.add_argument("--quick", action="store_true", help="skip the n_init=10 KMeans baseline")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    uvireid_ext.assert_has_ops()
    what = args.what.split(",")
    res: dict = {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "build": {
            k: getattr(uvireid_ext.build_info, k, None) for k in ("with_cuda", "cuda_version", "arch_list")
        },
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
    }
    if "kmeans" in what:
        res["kmeans"] = bench_kmeans(args.device, args.clusters, args.dim, args.quick)
    if "dbscan" in what:
        res["dbscan"] = bench_dbscan(args.device, [int(s) for s in args.dbscan_sizes.split(",")], args.eps)
    if "pipeline" in what:
        res["pipeline"] = bench_pipeline(
            args.device, [int(s) for s in args.pipeline_sizes.split(",")], args.eps
        )
    res["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(_markdown(res))
    save(args.out, f"cluster_{args.device}", res, _markdown(res))
    return 0


def _markdown(res: dict) -> str:
    lines = [
        f"# Clustering benchmarks ({res['device']}, torch {res['torch']}, {res['cpu_threads']} CPU threads)",
        "",
        f"Command: `{res['command']}`",
        "",
    ]
    for section in ("kmeans", "dbscan", "pipeline"):
        rows = res.get(section)
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines += [f"## {section}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
