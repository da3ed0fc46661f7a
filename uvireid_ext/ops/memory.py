"""Memory ops: in-place momentum update of a memory bank, and segment reductions (centroids)."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from . import op, register_fake

__all__ = ["SEGMENT_MODES", "memory_update_", "segment_reduce"]


SegmentMode = Literal["mean", "weighted_mean", "weighted_sum_by_count"]
#: ``mode`` names of :func:`segment_reduce`, as the op's schema takes them.
SEGMENT_MODES: tuple[str, ...] = get_args(SegmentMode)


def memory_update_(
    memory: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float, hard: bool = False
) -> None:
    """Update memory rows in place, in batch order (cluster-contrast's ``CM.backward``).

    For b = 0..B−1 with ``labels[b] >= 0``: ``c = m·c + (1−m)·x_b`` then ``c = c/‖c‖`` with
    ``c = memory[labels[b]]`` (norm clamped at 1e-12). Repeated labels are applied one after the
    other, in batch order, on CPU and CUDA alike. ``momentum = 0`` replaces the row with the last
    sample of its label. ``hard=True`` uses per label only the sample with the lowest cosine to the
    current row (ties: the earliest), once.

    Args:
        memory: [C, D] float32/float64, contiguous; updated in place.
        features: [B, D], same dtype and device.
        labels: [B] int64; negative = skip; must be < C.
        momentum: m in [0, 1].
        hard: use only the hardest sample per label.

    Call it outside autograd (after ``backward``), with detached features. On CUDA the labels are
    copied to the host once per call (a small synchronising copy): it validates them and fixes the
    per-row update order, one CUDA block per distinct label, so results are deterministic.
    """
    op("memory_update_")(memory, features.detach(), labels, float(momentum), bool(hard))


@register_fake("memory_update_")
def _memory_update_fake(
    memory: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, momentum: float, hard: bool
) -> None:
    return None


def segment_reduce(
    x: torch.Tensor,
    segments: torch.Tensor,
    num_segments: int,
    weights: torch.Tensor | None = None,
    mode: SegmentMode = "mean",
    normalize: bool = False,
) -> torch.Tensor:
    """Per-segment centroids of the rows of ``x``.

    Args:
        x: [N, D] float32/float64.
        segments: [N] int64 segment id in [0, num_segments), or −1 to leave the row out.
        num_segments: S, the number of output rows.
        weights: [N] per-row weights (e.g. confidences), same dtype; needed by the weighted modes.
        mode: ``"mean"`` Σx/count, ``"weighted_mean"`` Σwx/Σw, ``"weighted_sum_by_count"`` Σwx/count
            (MMM's prototypes, which shrink low-confidence identities toward 0).
        normalize: L2-normalise every output row (zero rows stay zero).

    Returns:
        [S, D] centroids; segments without rows (or with zero weight sum) are zero rows.
    """
    if mode not in SEGMENT_MODES:
        raise ValueError(f"segment_reduce: unknown mode {mode!r}; expected one of {sorted(SEGMENT_MODES)}")
    return op("segment_reduce")(x, segments, weights, int(num_segments), mode, bool(normalize))


@register_fake("segment_reduce")
def _segment_reduce_fake(
    x: torch.Tensor,
    segments: torch.Tensor,
    weights: torch.Tensor | None,
    num_segments: int,
    mode: str,
    normalize: bool,
) -> torch.Tensor:
    return x.new_empty(num_segments, x.shape[1])
