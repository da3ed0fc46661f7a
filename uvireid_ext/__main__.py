"""Command line: ``python -m uvireid_ext {info,bench,...}``."""

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
    import os
    import runpy
    from pathlib import Path

    # The benchmarks and their baselines live in the source tree's bench/ folder, not in the wheel.
    roots = [Path(__file__).resolve().parents[1], Path.cwd()]
    root = next((r for r in roots if (r / "bench").is_dir()), None)
    names = sorted(p.stem[len("bench_"):] for p in (root / "bench").glob("bench_*.py")) if root else []
    if not args.rest or args.rest[0] not in names:
        where = f"available: {', '.join(names)}" if names else "no bench/ folder found: run from a source checkout"
        print(f"usage: python -m uvireid_ext bench NAME [ARGS...]  ({where})", file=sys.stderr)
        return 2
    script = root / "bench" / f"bench_{args.rest[0]}.py"
    sys.argv = [str(script), *args.rest[1:]]
    os.chdir(root)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
