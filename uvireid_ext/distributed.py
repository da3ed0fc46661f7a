"""Distributed helpers of the trainer: no-ops in a single process, torch.distributed collectives under
torchrun (one process per device)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_rows", "broadcast", "init_distributed", "rank_world", "resolve_device"]


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's rows in rank order (rows may differ in count by rank)."""
    rank, world = rank_world()
    if world == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    pad = x.new_zeros((top, *x.shape[1:]))
    pad[: x.shape[0]] = x
    parts = [torch.zeros_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def broadcast(x: Tensor) -> Tensor:
    """Rank 0's ``x`` on every rank (in place)."""
    if rank_world()[1] > 1:
        dist.broadcast(x, 0)
    return x


def resolve_device(name: str, who: str = "train") -> torch.device:
    """``auto`` → CUDA when available, else CPU; a bare ``cuda`` → this process's LOCAL_RANK device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"{who}: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU build" if torch.version.cuda is None
                   else f"torch (CUDA {torch.version.cuda}) sees no GPU")
            raise ValueError(f"{who}: device {name!r} requested but {why} (torch {torch.__version__}); "
                             "use --device cpu, or install a CUDA build of torch (README, CUDA build)")
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"{who}: device {str(dev)!r} requested but only {torch.cuda.device_count()} "
                             "GPU(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"{who}: device {name!r} is not supported (expected auto, cpu, cuda or cuda:N)")
    return dev


def init_distributed(device: str = "auto") -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl when training on CUDA,
    gloo on CPU (``device`` is the run's configured device). Returns whether it joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return True
