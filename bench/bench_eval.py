"""Benchmark: uvireid_ext.evaluate (vectorised torch) against the standard per-query loop
(bench/baselines/eval_loop.py), on SYSU-shaped synthetic features, in the same run.

Cases (targets from issue 5, CPU):
  sysu-single  all-search single-shot, 10 trials of 3,803 x 301      <= 1 s
  sysu-multi   all-search multi-shot,  10 trials of 3,803 x 3,010    <= 10 s
  big          one 10,000 x 10,000 matrix (1,000 ids, SYSU cameras)   <= 5 s (GPU: <= 0.2 s)

The loop takes minutes for the full protocols (seconds per SYSU trial), so it is timed on a prefix of the
query rows of one trial and scaled linearly to the full case (rows and trials); the reported baseline
figures say so. On that prefix the two implementations' metrics are also compared.
Distance matrices are built before timing (excluded from both timings).

    python -m uvireid_ext bench eval [--device cuda] [--trials 10] [--out DIR]

Writes <out>/eval_<cpu|cuda>.{json,md} (eval_cpu_t<threads> with --threads).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench._report import argument_parser, save  # noqa: E402
from bench.baselines.eval_loop import eval_sysu_loop  # noqa: E402
from uvireid_ext.evaluate import eval_sysu  # noqa: E402

# SYSU-MM01 test-set shape (docs/protocols.md, SYSU-MM01): 96 ids; cam1/cam2 share 56 ids; cam4 94, cam5 95 ids;
# queries cam3 1,883 images (93 ids) + cam6 1,920 images (96 ids) = 3,803.
N_IDS, DIM = 96, 256


def sysu_shaped(rng: np.random.Generator, shot: int, trials: int):
    ids = np.arange(N_IDS)
    centres = rng.standard_normal((N_IDS, DIM)).astype(np.float32)
    modality = rng.standard_normal(DIM).astype(np.float32) * 0.5

    def feats(pids, noise):
        f = centres[pids] + noise * rng.standard_normal((len(pids), DIM)).astype(np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    cam3_ids = ids[:93]
    q_pids = np.concatenate([np.repeat(cam3_ids, 21)[:1883], np.repeat(ids, 20)])
    q_cams = np.concatenate([np.full(1883, 3), np.full(1920, 6)])
    q = feats(q_pids, 1.6) + modality
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    per_cam = {1: ids[40:], 2: ids[40:], 4: ids[:94], 5: ids[1:]}
    mats = []
    for _ in range(trials):
        g_pids = np.concatenate([np.repeat(per_cam[c], shot) for c in (1, 2, 4, 5)])
        g_cams = np.concatenate([np.full(len(per_cam[c]) * shot, c) for c in (1, 2, 4, 5)])
        g = feats(g_pids, 1.6)
        mats.append((-(q @ g.T), q_pids, g_pids, q_cams, g_cams))
    return mats


def big_case(rng: np.random.Generator, n: int = 10_000, ids: int = 1000):
    centres = rng.standard_normal((ids, 64)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, ids, n), rng.integers(0, ids, n)
    q = centres[q_pids] + 1.5 * rng.standard_normal((n, 64)).astype(np.float32)
    g = centres[g_pids] + 1.5 * rng.standard_normal((n, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return [(-(q @ g.T), q_pids, g_pids, rng.choice([3, 6], n), rng.choice([1, 2, 4, 5], n))]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ours(mats, device: str):
    dev = [tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in m) for m in mats]
    sync(device)
    t = time.perf_counter()
    results = [eval_sysu(*m) for m in dev]
    sync(device)
    return time.perf_counter() - t, results


def time_loop(mat, rows: int):
    d, qp, gp, qc, gc = mat
    rows = min(rows, d.shape[0])
    t = time.perf_counter()
    ref = eval_sysu_loop(d[:rows], qp[:rows], gp, qc[:rows], gc)
    return time.perf_counter() - t, rows, ref


def run_case(name, mats, loop_rows, device, target_s):
    seconds, results = time_ours(mats, device)
    loop_s, rows, _ = time_loop(mats[0], loop_rows)
    num_q = mats[0][0].shape[0]
    loop_full = loop_s * num_q / rows * len(mats)
    loop_measured = f"{loop_s:.2f} s on {rows} rows of 1 trial"
    # Same metrics on a prefix, against the loop with a stable sort: float32 products do tie now and
    # then, and the default quicksort orders ties arbitrarily (ours: by gallery index).
    d, qp, gp, qc, gc = mats[0]
    rows = min(rows, 100)
    ref = eval_sysu_loop(d[:rows], qp[:rows], gp, qc[:rows], gc, kind="stable")
    ours_prefix = eval_sysu(d[:rows], qp[:rows], gp, qc[:rows], gc)
    agree = bool(
        np.allclose(ours_prefix.cmc.numpy(), ref[0], atol=1e-6)
        and abs(ours_prefix.mAP - ref[1]) < 1e-9
        and abs(ours_prefix.mINP - ref[2]) < 1e-9
    )
    r = results[0]
    row = {
        "case": name,
        "shape": f"{num_q} x {d.shape[1]}",
        "trials": len(mats),
        "ours_s": round(seconds, 4),
        "loop_s_estimated": round(loop_full, 1),
        "loop_measured": loop_measured,
        "speedup": round(loop_full / seconds, 1),
        "target_s": target_s,
        "meets_target": seconds <= target_s,
        "agree_with_loop_on_prefix": agree,
        "agree_rows": rows,
        "trial0": r.summary(),
    }
    print(
        f"{name:12s} {row['shape']:>14s} x{len(mats):<2d} ours {seconds:7.3f} s (target {target_s} s: "
        f"{'ok' if row['meets_target'] else 'MISSED'})  loop ~{loop_full:8.1f} s "
        f"({row['loop_measured']})  ratio {row['speedup']:.0f}x  agree {agree}"
    )
    return row


def parser() -> argparse.ArgumentParser:
    ap = argument_parser(__doc__)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N)")
    ap.add_argument("--trials", type=int, default=10, help="SYSU gallery trials")
    ap.add_argument("--loop-rows", type=int, default=400, help="query rows the loop is timed on")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_eval: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    # Warm-up (first-call allocations, lazy init) on a small case.
    time_ours(sysu_shaped(np.random.default_rng(1), 1, 1), args.device)
    gpu = args.device.startswith("cuda")
    rows = [
        run_case("sysu-single", sysu_shaped(rng, 1, args.trials), args.loop_rows, args.device, 1.0),
        run_case("sysu-multi", sysu_shaped(rng, 10, args.trials), args.loop_rows // 2, args.device, 10.0),
        run_case("big", big_case(rng), args.loop_rows // 4, args.device, 0.2 if gpu else 5.0),
    ]
    try:
        import uvireid_ext

        info = uvireid_ext.build_info
        build = (
            {k: v for k, v in vars(info).items() if not k.startswith("_") and isinstance(v, (str, bool, int))}
            if info is not None
            else "not built"
        )
    except Exception as e:  # the evaluator needs no compiled ops; record why the build info is absent
        build = f"unavailable: {e!r}"
    meta = {
        "device": torch.cuda.get_device_name() if gpu else cpu_name(),
        "device_kind": args.device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "build": build if isinstance(build, (dict, str)) else str(build),
    }
    tag = "cuda" if gpu else "cpu"
    if args.threads:
        tag += f"_t{args.threads}"
    md = [
        f"# Evaluator benchmark ({tag})\n\n",
        f"{meta['device']}, {meta['cpu_count']} CPUs, torch {meta['torch']} "
        f"({meta['torch_threads']} threads), numpy {meta['numpy']}\n\n",
        "Loop = the standard per-query NumPy loop, timed on a prefix of one trial's rows and scaled "
        "linearly to all rows and trials. Distance matrices excluded from all timings.\n\n",
        "| case | shape | trials | ours (s) | target (s) | loop (s, est.) | loop measured | ratio | "
        "agree |\n|---|---|---|---|---|---|---|---|---|\n",
    ]
    for r in rows:
        md.append(
            f"| {r['case']} | {r['shape']} | {r['trials']} | {r['ours_s']} | {r['target_s']} | "
            f"{r['loop_s_estimated']} | {r['loop_measured']} | {r['speedup']}x | "
            f"{r['agree_with_loop_on_prefix']} |\n"
        )
    save(args.out, f"eval_{tag}", {"meta": meta, "results": rows}, "".join(md))
    return 0 if all(r["meets_target"] and r["agree_with_loop_on_prefix"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
