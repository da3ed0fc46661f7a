"""The memory update as users run it today: cluster-contrast's ``CM.backward`` loop, one sample at a
time in batch order (written by us from docs/architecture.md, memory_update_). Baseline of
bench/bench_memory.py."""

from __future__ import annotations

import torch


@torch.no_grad()
def memory_update_loop(
    features: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, momentum: float
) -> None:
    """In place: for each (x, y) in order, c_y = m·c_y + (1−m)·x, then c_y /= ‖c_y‖ (labels < 0 skipped)."""
    for x, y in zip(inputs, targets.tolist(), strict=True):
        if y < 0:
            continue
        features[y] = momentum * features[y] + (1.0 - momentum) * x
        features[y] /= features[y].norm()
