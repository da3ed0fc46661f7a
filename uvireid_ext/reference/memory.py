"""Plain reference for memory_update_ and segment_reduce."""

from __future__ import annotations

import torch

__all__ = ["memory_update_", "segment_reduce"]


def memory_update_(
    memory: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float, hard: bool = False
) -> None:
    """Sequential in-place update, batch order (see ``uvireid_ext.ops.memory.memory_update_``). As
    the kernels: the row in the memory's dtype, its norm in float64 (float32 rows of magnitude 1e20
    would overflow a float32 norm)."""
    eps = 1e-12
    if hard:
        for c in sorted({int(v) for v in labels.tolist() if v >= 0}):
            idx = (labels == c).nonzero().flatten()
            xs = features[idx].double()
            cos = (xs @ memory[c].double()) / xs.norm(dim=1).clamp_min(eps)
            b = int(idx[int(torch.argmin(cos))])  # argmin returns the first minimum
            row = momentum * memory[c] + (1 - momentum) * features[b]
            memory[c] = row / row.double().norm().clamp_min(eps)
        return
    for b in range(labels.numel()):
        c = int(labels[b])
        if c < 0:
            continue
        row = momentum * memory[c] + (1 - momentum) * features[b]
        memory[c] = row / row.double().norm().clamp_min(eps)


def segment_reduce(
    x: torch.Tensor,
    segments: torch.Tensor,
    num_segments: int,
    weights: torch.Tensor | None = None,
    mode: str = "mean",
    normalize: bool = False,
) -> torch.Tensor:
    """Per-segment mean / weighted mean / weighted sum divided by count, one segment at a time."""
    out = x.new_zeros(num_segments, x.shape[1])
    for s in range(num_segments):
        rows = segments == s
        if not bool(rows.any()):
            continue
        xs = x[rows].double()
        w = torch.ones(xs.shape[0], dtype=torch.float64) if mode == "mean" else weights[rows].double()
        total = (w[:, None] * xs).sum(0)
        denom = w.sum() if mode == "weighted_mean" else torch.tensor(float(xs.shape[0]), dtype=torch.float64)
        c = total / denom if float(denom) != 0.0 else torch.zeros_like(total)
        if normalize:
            c = c / c.norm().clamp_min(1e-12)
        out[s] = c.to(x.dtype)
    return out
