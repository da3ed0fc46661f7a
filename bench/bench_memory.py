"""memory_update_ vs the sequential per-sample loop (cluster-contrast's CM.backward), same run.

    python -m uvireid_ext bench memory [--device cpu|cuda] [--min-run-time 1.0] [--out DIR]

Writes <out>/memory_update_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import argument_parser, line, write  # noqa: E402
from baselines.memory_loop import memory_update_loop  # noqa: E402

from uvireid_ext.ops.memory import memory_update_  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argument_parser(__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the op and the loop run")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds each timing runs for at least")
    p.add_argument("--sizes", default="256,500,2048",
                   help="batch B, memory slots C, dimension D: B,C,D triples separated by ';'")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    dev = args.device
    rows = []
    for spec in args.sizes.split(";"):
        B, C, D = (int(v) for v in spec.split(","))
        g = torch.Generator().manual_seed(0)
        memory = F.normalize(torch.randn(C, D, generator=g), dim=1).to(dev)
        x = F.normalize(torch.randn(B, D, generator=g), dim=1).to(dev)
        labels = torch.randint(0, C, (B,), generator=g).to(dev)  # repeats: the batch order matters
        for m in (0.1, 0.0):
            a, b = memory.clone(), memory.clone()
            memory_update_(a, x, labels, m)
            memory_update_loop(b, x, labels, m)
            err = (a - b).abs().max().item()
            t_loop = Timer("f(mem, x, l, m)", globals=dict(f=memory_update_loop, mem=b, x=x, l=labels, m=m))
            t_ours = Timer("f(mem, x, l, m)", globals=dict(f=memory_update_, mem=a, x=x, l=labels, m=m))
            loop = t_loop.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
            ours = t_ours.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
            rows.append(
                dict(
                    B=B,
                    C=C,
                    D=D,
                    momentum=m,
                    loop_ms=round(loop, 3),
                    op_ms=round(ours, 3),
                    speedup=round(loop / ours, 1),
                    max_abs_diff=f"{err:.1e}",
                )
            )
            print(line(rows[-1]), flush=True)
    write(args.out, "memory_update", dev, rows, list(rows[0]))


if __name__ == "__main__":
    main()
