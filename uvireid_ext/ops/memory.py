"""Memory ops: in-place momentum update of a memory bank, and segment reductions (centroids)."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from . import check_output_fits, checking, has_schema, int_arg, int_ids, op, register_fake

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

    Call it outside autograd (after ``backward``, or under ``torch.no_grad()``): as torch's own
    in-place ops, it refuses a memory that requires grad while grad mode is on (the update has no
    derivative to record). It bumps the memory's version counter, so backpropagating through a graph
    that used the old values fails loudly instead of using the new ones. ``features`` must not share
    memory with ``memory`` (the update would read rows it has already written). On CUDA the labels
    are copied to the host once per call (a small synchronising copy): it validates them and fixes
    the per-row update order, one CUDA block per distinct label, so results are deterministic.
    """
    fn = "memory_update_"
    if isinstance(memory, torch.Tensor) and memory.requires_grad and torch.is_grad_enabled():
        kind = "a leaf tensor" if memory.is_leaf else "a tensor"
        raise RuntimeError(
            f"{fn}: memory is {kind} that requires grad, updated in place with grad mode on; "
            "call it under torch.no_grad() or pass a memory without requires_grad"
        )
    int_ids(fn, "labels", labels)
    if checking() and isinstance(features, torch.Tensor) and isinstance(memory, torch.Tensor):
        _refuse_overlap(fn, memory, features)
    op(fn)(memory, features.detach(), labels, float(momentum), bool(hard))
    if checking():  # the kernel writes through the data pointer, unseen by autograd's version counter
        torch.autograd.graph.increment_version(memory)


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) bytes spanned by ``t``'s elements (torch strides are >= 0)."""
    if t.numel() == 0:
        return 0, 0
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return t.data_ptr(), t.data_ptr() + extent * t.element_size()


def _refuse_overlap(fn: str, memory: torch.Tensor, features: torch.Tensor) -> None:
    if memory.device != features.device or memory.untyped_storage().data_ptr() != features.untyped_storage().data_ptr():
        return
    (m0, m1), (f0, f1) = _byte_range(memory), _byte_range(features)
    if m0 < f1 and f0 < m1:
        raise ValueError(f"{fn}: features share memory with memory (features is a view of it); pass a copy")


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

    Differentiable in ``x`` and ``weights`` (twice: the backward is made of torch ops); at a zero
    weight sum the weights get a zero gradient.
    """
    fn = "segment_reduce"
    if mode not in SEGMENT_MODES:
        raise ValueError(f"{fn}: unknown mode {mode!r}; expected one of {sorted(SEGMENT_MODES)}")
    int_ids(fn, "segments", segments)
    num_segments = int_arg(fn, "num_segments", num_segments)
    if isinstance(x, torch.Tensor) and x.dim() == 2:  # output rows, and the kernel's offsets per segment
        check_output_fits(fn, "num_segments", num_segments, x.shape[1] * x.element_size() + 8, x.device)
    return op(fn)(x, segments, weights, num_segments, mode, bool(normalize))


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


_NORM_EPS = 1e-12  # the kernel's clamp of the output norm (normalize=True)


def _segment_reduce_grads(
    grad: torch.Tensor,
    x: torch.Tensor,
    segments: torch.Tensor,
    weights: torch.Tensor | None,
    num_segments: int,
    mode: str,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(grad_x, grad_weights) of segment_reduce, in torch ops so that they are differentiable too.
    Row i enters its segment s with the coefficient a_i (1/count, w_i/Σw or w_i/count). Rows with
    segment -1 go to an extra bucket S, whose gradient is zero (static shapes, for torch.compile)."""
    keep = (segments >= 0).to(x.dtype)
    s = torch.where(segments >= 0, segments, num_segments)
    buckets = num_segments + 1
    count = x.new_zeros(buckets).index_add(0, s, keep)[s].clamp_min(1)
    w = None if weights is None else weights * keep
    wsum = total = None
    if mode == "mean":
        a = keep / count
    elif mode == "weighted_mean":
        total = x.new_zeros(buckets).index_add(0, s, w)[s]
        wsum = torch.where(total != 0, total, torch.ones_like(total))  # zero sum: a zero row, zero gradient
        a = torch.where(total != 0, w / wsum, torch.zeros_like(w))
    else:
        a = w / count
    centre = None
    if normalize or mode == "weighted_mean":
        centre = x.new_zeros(buckets, x.shape[1]).index_add(0, s, a[:, None] * x)
    g = torch.cat([grad, grad.new_zeros(1, grad.shape[1])])
    if normalize:
        norm = centre.norm(dim=1, keepdim=True)
        unit = centre / norm.clamp_min(_NORM_EPS)
        projected = (g - unit * (unit * g).sum(1, keepdim=True)) / norm.clamp_min(_NORM_EPS)
        g = torch.where(norm > _NORM_EPS, projected, g / _NORM_EPS)
    gs = g[s]
    grad_x = a[:, None] * gs
    if mode == "mean":
        return grad_x, None
    if mode == "weighted_mean":
        grad_w = torch.where(total != 0, ((x - centre[s]) * gs).sum(1) / wsum, torch.zeros_like(a)) * keep
    else:
        grad_w = (x * gs).sum(1) * keep / count
    return grad_x, grad_w


def _segment_reduce_setup(ctx, inputs, output) -> None:  # noqa: ANN001  (torch.library signature)
    x, segments, weights, num_segments, mode, normalize = inputs
    ctx.save_for_backward(x, segments, weights)
    ctx.num_segments, ctx.mode, ctx.normalize = num_segments, mode, normalize


def _segment_reduce_backward(ctx, grad):  # noqa: ANN001, ANN202
    x, segments, weights = ctx.saved_tensors
    grad_x, grad_w = _segment_reduce_grads(grad, x, segments, weights, ctx.num_segments, ctx.mode, ctx.normalize)
    return (
        grad_x if ctx.needs_input_grad[0] else None,
        None,
        grad_w if ctx.needs_input_grad[2] else None,
        None,
        None,
        None,
    )


if has_schema("segment_reduce"):
    torch.library.register_autograd(
        "uvireid_ext::segment_reduce", _segment_reduce_backward, setup_context=_segment_reduce_setup
    )
