"""Shared by the benchmarks: their command line (--out and the help layout), the environment record,
the JSON + markdown output and the printed lines.

Results go to ``--out`` (default ``runs/bench`` under the source root, git-ignored); the committed
results in ``bench/results`` are updated deliberately, with ``--out bench/results``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
from collections.abc import Callable
from typing import Any

import torch

import uvireid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "runs", "bench")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and appends every option's default to its help, unless the
    help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring as the description, defaults shown, and ``--out``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    p.add_argument(
        "--out", default=DEFAULT_OUT,
        help="folder for the JSON and markdown results (default: runs/bench under the source root, git-ignored; "
        "--out bench/results updates the committed results)",
    )
    return p


def save(out: str, stem: str, record: dict[str, Any], markdown: str) -> list[str]:
    """Write <out>/<stem>.json and .md, print their absolute paths and return them."""
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{stem}.json"), os.path.join(out, f"{stem}.md")]
    with open(paths[0], "w") as f:
        json.dump(record, f, indent=2, default=str)
    with open(paths[1], "w") as f:
        f.write(markdown)
    print("wrote " + " and ".join(paths), flush=True)
    return paths


def line(row: dict[str, Any]) -> str:
    """One result row as a readable line, ``key value`` pairs (floats to 4 significant digits)."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def environment(device: str) -> dict[str, Any]:
    info = uvireid_ext.build_info
    dev = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": device,
        "device_name": dev,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "build": {k: getattr(info, k) for k in dir(info) if not k.startswith("_")} if info else None,
    }


def write(out: str, name: str, device: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Print the markdown table of ``rows`` and write <out>/<name>_<device>.{json,md} (printing where);
    returns the table."""
    env = environment(device)
    lines = [
        f"# {name} on {device} ({env['device_name']}, {env['cpu_threads']} threads, torch {env['torch']})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "—")) for c in columns) + " |")
    table = "\n".join(lines) + "\n"
    print(table, flush=True)
    save(out, f"{name}_{device}", {"environment": env, "rows": rows}, table)
    return table


def in_process(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh process and return what it puts on the queue, so that
    peak memory (ru_maxrss) measured inside belongs to that run alone."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB: VmHWM, which (unlike ru_maxrss) restarts at exec,
    so a spawned child does not inherit its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
