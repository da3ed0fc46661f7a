"""Shared by the kernel benchmarks: environment record, JSON + markdown output under bench/results/."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
from collections.abc import Callable
from typing import Any

import torch

import uvireid_ext

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def write(name: str, device: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Write bench/results/<name>_<device>.{json,md}; returns the markdown table."""
    os.makedirs(RESULTS, exist_ok=True)
    env = environment(device)
    with open(os.path.join(RESULTS, f"{name}_{device}.json"), "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=2)
    lines = [
        f"# {name} on {device} ({env['device_name']}, {env['cpu_threads']} threads, torch {env['torch']})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, f"{name}_{device}.md"), "w") as f:
        f.write(table)
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
