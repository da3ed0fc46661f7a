"""Command line: ``python -m uvireid_ext {info,bench,make-data,train,eval,demo}``."""

from __future__ import annotations

import argparse
import logging
import platform
import sys

import torch


def cmd_info(args: argparse.Namespace) -> int:
    import uvireid_ext

    info = uvireid_ext.build_info
    print(f"uvireid_ext {uvireid_ext.__version__}")
    print(f"python      {platform.python_version()} ({sys.executable})")
    gpu = torch.cuda.is_available()
    print(f"torch       {torch.__version__} (CUDA {torch.version.cuda}, GPU available: {gpu})")
    if info is None:
        print("build       none: uvireid_ext._C is not built; run: pip install --no-build-isolation .")
        return 1
    print(f"build       {'CUDA + CPU' if info.with_cuda else 'CPU only'} ({info.reason})")
    print(f"  built with torch {info.torch_version}, loads into torch >= {info.min_torch} (stable ABI)")
    print(f"  CUDA {info.cuda_version}, nvcc {info.nvcc_version}, arch list {info.arch_list or '-'}")
    print(f"  ops loaded: {uvireid_ext.HAS_OPS}")
    if torch.cuda.is_available():
        print(f"device      {torch.cuda.get_device_name()}")
    return 0 if uvireid_ext.HAS_OPS else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy
    from pathlib import Path

    # The benchmarks and their baselines live in the source tree's bench/ folder, not in the wheel.
    roots = [Path(__file__).resolve().parents[1], Path.cwd()]
    root = next((r for r in roots if (r / "bench").is_dir()), None)
    names = sorted(p.stem[len("bench_"):] for p in (root / "bench").glob("bench_*.py")) if root else []
    if not args.rest or args.rest[0] not in names:
        if args.rest and args.rest[0] in ("-h", "--help"):
            print(f"usage: python -m uvireid_ext bench NAME [ARGS...]; NAME from: {', '.join(names) or '(none)'}; "
                  "`bench NAME --help` for a benchmark's options; results go to runs/bench (git-ignored) "
                  "unless --out DIR")
            return 0
        where = f"available: {', '.join(names)}" if names else "no bench/ folder found: run from a source checkout"
        print(f"usage: python -m uvireid_ext bench NAME [ARGS...]  ({where})", file=sys.stderr)
        return 2
    script = root / "bench" / f"bench_{args.rest[0]}.py"
    sys.argv = [str(script), *args.rest[1:]]
    # No chdir: a relative --out is the user's (relative to where they run this); the default lies
    # under the source root (bench/_report.py).
    sys.path.insert(0, str(root))
    runpy.run_path(str(script), run_name="__main__")
    return 0


def cmd_make_data(args: argparse.Namespace) -> int:
    import time

    from .data.synthetic import make_regdb, make_sysu

    t0 = time.perf_counter()
    if args.kind == "sysu":
        counts = make_sysu(args.out, ids=args.ids or 48, seed=args.seed)
    else:
        counts = make_regdb(args.out, ids=args.ids or 40, seed=args.seed)
    print(f"wrote a synthetic {args.kind} tree to {args.out} in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    from .config import config_from_args
    from .train import train

    try:
        cfg = config_from_args(args)
        train(cfg)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _fail(e)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    import time
    import warnings

    from .distributed import resolve_device
    from .rerank import ReRank, check_settings
    from .train import extract_features, load_eval_set, load_model, run_protocol

    try:
        rerank = ReRank(args.k1, args.k2, args.lambda_value) if args.rerank else None
        if rerank is not None:  # cheap checks first: the sizes are checked once the features exist
            check_settings("eval --rerank", sys.maxsize, args.k1, args.k2, args.lambda_value)
        device = resolve_device(args.device, "eval")
        model, cfg = load_model(args.checkpoint, str(device))
        d = cfg.data
        if d.dataset == "sysu" and args.direction not in (None, "t2v"):
            raise ValueError(f"eval: --direction {args.direction} is not a SYSU-MM01 protocol (infrared → visible, "
                             "t2v, only)")
        if d.dataset == "regdb" and args.mode is not None:
            raise ValueError(f"eval: --mode {args.mode} is a SYSU-MM01 setting; this checkpoint is a RegDB run")
        trial = args.trial or d.trial
        if d.dataset == "regdb" and trial != d.trial:
            warnings.warn(f"eval: --trial {trial} differs from the trial this checkpoint was trained on ({d.trial}): "
                          "its test identities overlap that trial's training identities", stacklevel=1)
        root = args.data_root or d.data_root
        t = time.perf_counter()
        print(f"eval: loading the {d.dataset} test set from {root} at {d.height}×{d.width} ...", flush=True)
        es = load_eval_set(d.dataset, root, d.height, d.width, mode=args.mode or d.eval_mode, trials=args.trials,
                           trial=trial, direction=args.direction)
        print(f"eval: {len(es.q_pid)} queries, {len(es.galleries)} gallery trial(s) in {time.perf_counter() - t:.1f} s",
              flush=True)
        res = run_protocol(es, lambda x, ir: extract_features(model, x, ir, device=device, batch=args.batch,
                                                              flip=d.test_flip), rerank=rerank).summary()
    except (ValueError, FileNotFoundError, OSError) as e:
        return _fail(e)
    what = d.dataset if d.dataset == "sysu" else f"regdb trial {trial} {args.direction or 'v2t'}"
    if args.rerank:
        what += f", re-ranked (k1 {args.k1}, k2 {args.k2}, lambda {args.lambda_value})"
    print(f"{what} ({args.checkpoint}): R1 {100 * res['R1']:.2f}  R5 {100 * res['R5']:.2f}  "
          f"R10 {100 * res['R10']:.2f}  mAP {100 * res['mAP']:.2f}  mINP {100 * res['mINP']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        run_demo(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _fail(e)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uvireid_ext", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration").set_defaults(fn=cmd_info)
    p = sub.add_parser("bench", help="run a benchmark from bench/ (see --help there)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("make-data", help="write a synthetic SYSU-MM01- or RegDB-shaped data set")
    p.add_argument("--kind", choices=["sysu", "regdb"], required=True)
    p.add_argument("--out", required=True, help="output folder (the data root)")
    p.add_argument("--ids", type=int, default=None, help="identities (default: sysu 48, regdb 40)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_data)
    from .config import add_arguments
    from .demo import add_arguments as demo_arguments

    p = sub.add_parser("train", help="train a recipe (baseline | mmm | ecul); every config field is a flag")
    add_arguments(p)
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint with the SYSU-MM01 / RegDB protocol")
    p.add_argument("--checkpoint", required=True, help="<output>/checkpoint.pt of a training run")
    p.add_argument("--data-root", default=None, help="default: the run's data root")
    p.add_argument("--mode", default=None, choices=["all", "indoor"],
                   help="SYSU-MM01 search mode (default: the run's)")
    p.add_argument("--trials", type=int, default=10, help="SYSU-MM01 gallery trials (default: 10)")
    p.add_argument("--trial", type=int, default=None, help="RegDB split 1-10 (default: the one the run trained on)")
    p.add_argument("--direction", default=None, choices=["v2t", "t2v"],
                   help="RegDB query → gallery: visible → thermal (v2t, default) or thermal → visible (t2v); "
                   "SYSU-MM01 is t2v only")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch", type=int, default=256, help="images per extraction batch (default: 256)")
    p.add_argument("--json", default=None, help="also write the metrics (and CMC) to this JSON file")
    p.add_argument("--rerank", action="store_true",
                   help="rank by k-reciprocal re-ranked distances (Zhong et al. 2017; uvireid_ext.re_rank)")
    p.add_argument("--k1", type=int, default=20, help="re-ranking: k-reciprocal neighbourhood (default: 20)")
    p.add_argument("--k2", type=int, default=6, help="re-ranking: query expansion, 1 = none (default: 6)")
    p.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                   help="re-ranking: weight of the original distance, in [0, 1] (default: 0.3)")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("demo", help="train and evaluate every recipe on a synthetic SYSU-shaped set (CPU)",
                       description="Generate (or reuse) a synthetic SYSU-MM01-shaped set, train every recipe "
                       "(baseline, mmm, ecul; with --ablation each objective left out in turn) for a few epochs "
                       "on the CPU, evaluate each with the SYSU protocol, and write demo.json, the per-run logs "
                       "and plots under --out.")
    demo_arguments(p)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # bench passes everything after NAME to the script; argparse would take a leading -h itself
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.rest = [*extra, *args.rest]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
