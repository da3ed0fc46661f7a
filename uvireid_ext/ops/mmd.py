"""Grouped multi-kernel MMD² (MMM's soft cluster-level inter alignment) with autograd."""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import check_output_fits, checking, has_schema, int_arg, int_ids, op, register_fake

__all__ = ["MIN_BANDWIDTH", "MMD2Result", "mmd2"]

#: Smallest bandwidth: the data-driven rule's floor (all points equal), and the bound given ones
#: must respect (1/b enters the gradient; the CPU kernel forms it in the inputs' dtype).
MIN_BANDWIDTH = 1e-12


class MMD2Result(NamedTuple):
    """Output of :func:`mmd2`."""

    values: torch.Tensor  #: [G] MMD² per group (0 where a side is empty)
    valid: torch.Tensor  #: [G] bool, False where the group has no x or no y rows (skipped)
    bandwidths: torch.Tensor  #: [G, S] bandwidths used (no gradient flows through them)


def mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor,
    y_groups: torch.Tensor,
    num_groups: int,
    bandwidths: torch.Tensor | None = None,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
) -> MMD2Result:
    """MMD² between the x rows and the y rows of every group, all groups in one call.

    Per group g with sets X (n rows) and Y (m rows): mean K(X,X) + mean K(Y,Y) − 2 mean K(X,Y),
    K(a, b) = Σ_s exp(−‖a−b‖²/b_s) (the biased V-statistic of MMM's ``MMD_loss``; n ≠ m allowed).
    Bandwidths: ``bandwidths`` [S] for every group, or MMM's data-driven rule: base = mean
    off-diagonal squared distance of the pooled X ∪ Y (computed without gradient), and
    b_s = base · kernel_mul^(s − kernel_num//2), s = 0..kernel_num−1.

    Args:
        x: [Nx, D] float32/float64. y: [Ny, D], same dtype and device.
        x_groups: [Nx] int64 in [0, num_groups). y_groups: [Ny] int64 in [0, num_groups).
        num_groups: G.
        bandwidths: optional [S] bandwidths >= ``MIN_BANDWIDTH`` (1e-12), same dtype and device as x.

    Differentiable in x and y, once: differentiating the gradient again (a backward with
    ``create_graph=True``, then a second backward through it) raises. For stop-gradient detach one
    side. Groups with an empty side give 0 and ``valid = False`` (average over ``values[valid]``).
    Data-driven bandwidths must fit the dtype (float32: squared distances below ~3e38), else a
    ValueError names the group. On CUDA the group ids are copied to the host once per call (a small
    synchronising copy) to validate and group them.
    """
    fn = "mmd2"
    int_ids(fn, "x_groups", x_groups)
    int_ids(fn, "y_groups", y_groups)
    num_groups = int_arg(fn, "num_groups", num_groups)
    kernel_num = int_arg(fn, "kernel_num", kernel_num)
    if isinstance(x, torch.Tensor):  # per group: value, valid flag, bandwidths, and the kernel's offsets
        s = kernel_num if bandwidths is None else bandwidths.numel()
        check_output_fits(fn, "num_groups", num_groups, (s + 1) * x.element_size() + 1 + 32, x.device)
    if bandwidths is not None and checking() and isinstance(bandwidths, torch.Tensor) and bandwidths.numel():
        low = bandwidths.detach().min()
        if bool(low < MIN_BANDWIDTH):  # (a NaN compares False: the kernel's check names it)
            raise ValueError(
                f"{fn}: expected bandwidths >= {MIN_BANDWIDTH:g} (the floor of the data-driven rule), got "
                f"{float(low):g}; a smaller one overflows the float32 gradient on CPU"
            )
    values, valid, bw = op(fn)(x, y, x_groups, y_groups, num_groups, bandwidths, float(kernel_mul), kernel_num)
    if bandwidths is None and checking() and bw.numel() and not bool(torch.isfinite(bw).all()):
        group = int((~torch.isfinite(bw)).any(1).nonzero()[0])
        raise ValueError(
            f"{fn}: the data-driven bandwidths of group {group} overflow {x.dtype} (its mean squared "
            "distance does not fit the dtype); scale x and y down, or use float64"
        )
    return MMD2Result(values, valid, bw)


@register_fake("mmd2")
def _mmd2_fake(
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor,
    y_groups: torch.Tensor,
    num_groups: int,
    bandwidths: torch.Tensor | None,
    kernel_mul: float,
    kernel_num: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = kernel_num if bandwidths is None else bandwidths.shape[0]
    return x.new_empty(num_groups), x.new_empty(num_groups, dtype=torch.bool), x.new_empty(num_groups, s)


@register_fake("_mmd2_backward")
def _mmd2_backward_fake(
    grad: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor,
    y_groups: torch.Tensor,
    bandwidths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(y)


class _FirstOrderOnly(torch.autograd.Function):
    """Passes mmd2's gradients through, attached to x, y and the incoming gradient, with a backward
    that raises: with ``create_graph=True`` the gradients are then part of the graph, and
    differentiating them again fails loudly instead of giving a silently zero second-order term."""

    @staticmethod
    def forward(ctx, gx, gy, x, y, grad_values):  # noqa: ANN001, ANN205
        return gx.clone(), gy.clone()

    @staticmethod
    def backward(ctx, *grads):  # noqa: ANN001, ANN205
        raise RuntimeError(
            "mmd2: double backward is not supported: the gradient of mmd2 (from backward with "
            "create_graph=True) cannot be differentiated again"
        )


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001  (torch.library signature)
    x, y, x_groups, y_groups, _num_groups, _bw, _mul, _num = inputs
    _, valid, bw = output
    ctx.mark_non_differentiable(valid, bw)
    ctx.save_for_backward(x, y, x_groups, y_groups, bw)


def _backward(ctx, grad_values, _grad_valid, _grad_bw):  # noqa: ANN001, ANN202
    x, y, x_groups, y_groups, bw = ctx.saved_tensors
    if grad_values is None:
        return None, None, None, None, None, None, None, None
    gx, gy = op("_mmd2_backward")(grad_values.contiguous(), x, y, x_groups, y_groups, bw)
    if torch.is_grad_enabled():  # create_graph=True: the kernel's gradient has no derivative of its own
        gx, gy = _FirstOrderOnly.apply(gx, gy, x, y, grad_values)
    return (
        gx if ctx.needs_input_grad[0] else None,
        gy if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


if has_schema("mmd2"):
    torch.library.register_autograd("uvireid_ext::mmd2", _backward, setup_context=_setup_context)
