"""mmd2 (all identities in one call) vs MMM's per-identity MMD loop, forward + backward, same run.

    python -m uvireid_ext bench mmd [--device cpu|cuda] [--min-run-time 1.0] [--out DIR]

Writes <out>/mmd2_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils.benchmark import Timer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import argument_parser, line, write  # noqa: E402
from baselines.mmd_loop import mmd_per_identity  # noqa: E402

from uvireid_ext.losses import mmd_alignment  # noqa: E402


def fwd_bwd(fn, f_v: torch.Tensor, f_r: torch.Tensor, y_v: torch.Tensor, y_r: torch.Tensor) -> torch.Tensor:
    f_v.grad = None
    loss = fn(f_v, f_r, y_v, y_r)
    loss.backward()
    return loss


def parser() -> argparse.ArgumentParser:
    p = argument_parser(__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the op and the loop run")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds each timing runs for at least")
    p.add_argument("--ids", default="8,16,32", help="identities per batch, one case each, comma separated")
    p.add_argument("--per-id", type=int, default=8, help="samples per identity and modality")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    dev = args.device
    rows = []
    for G in (int(v) for v in args.ids.split(",")):
        g = torch.Generator().manual_seed(0)
        n = G * args.per_id
        y = torch.arange(G).repeat_interleave(args.per_id).to(dev)
        f_v = torch.randn(n, args.dim, generator=g).to(dev).requires_grad_()
        f_r = (torch.randn(n, args.dim, generator=g) + 0.1).to(dev).requires_grad_()
        ref = fwd_bwd(mmd_per_identity, f_v, f_r, y, y).item()
        g_ref = f_v.grad.clone()
        ours = fwd_bwd(mmd_alignment, f_v, f_r, y, y).item()
        g_err = (f_v.grad - g_ref).abs().max().item() / g_ref.abs().max().item()
        env = dict(fn=fwd_bwd, f_v=f_v, f_r=f_r, y=y)
        t_loop = Timer("fn(loop, f_v, f_r, y, y)", globals=dict(env, loop=mmd_per_identity))
        t_ours = Timer("fn(ours, f_v, f_r, y, y)", globals=dict(env, ours=mmd_alignment))
        loop = t_loop.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
        op = t_ours.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
        rows.append(
            dict(
                ids=G,
                per_id=args.per_id,
                D=args.dim,
                loop_ms=round(loop, 3),
                op_ms=round(op, 3),
                speedup=round(loop / op, 1),
                loss_rel_diff=f"{abs(ours - ref) / abs(ref):.1e}",
                grad_rel_diff=f"{g_err:.1e}",
            )
        )
        print(line(rows[-1]), flush=True)
    write(args.out, "mmd2", dev, rows, list(rows[0]))


if __name__ == "__main__":
    main()
