"""Plain reference for mmd2: one group at a time, MMM's ``MMD_loss`` generalised to n ≠ m."""

from __future__ import annotations

import torch

__all__ = ["_mmd2_backward", "mmd2", "mmd2_single"]


def mmd2_single(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: torch.Tensor | None = None,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MMD² of two sets (differentiable) and the bandwidths used. As the kernels: squared distances
    and kernel sums in float64, bandwidths in the inputs' dtype (float32 ones overflow to Inf when
    the mean squared distance exceeds float32, which the op refuses)."""
    pooled = torch.cat([x, y]).double()
    d = (pooled[:, None, :] - pooled[None, :, :]).pow(2).sum(-1)
    p = pooled.shape[0]
    if bandwidths is None:
        base = (d.detach().sum() / (p * p - p)).clamp_min(1e-12) / kernel_mul ** (kernel_num // 2)
        bw = torch.stack([base * kernel_mul**s for s in range(kernel_num)]).to(x.dtype)
    else:
        bw = bandwidths
    k = sum(torch.exp(-d / b) for b in bw.double())
    n = x.shape[0]
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).to(x.dtype), bw


def mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor,
    y_groups: torch.Tensor,
    num_groups: int,
    bandwidths: torch.Tensor | None = None,
    kernel_mul: float = 2.0,
    kernel_num: int = 5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values [G], valid [G], bandwidths [G, S]) as the op returns them."""
    s = kernel_num if bandwidths is None else bandwidths.numel()
    values, valid, bws = [], [], []
    for g in range(num_groups):
        xs, ys = x[x_groups == g], y[y_groups == g]
        if xs.shape[0] == 0 or ys.shape[0] == 0:
            values.append(x.sum() * 0)
            valid.append(False)
            bws.append(bandwidths if bandwidths is not None else x.new_zeros(s))
            continue
        v, bw = mmd2_single(xs, ys, bandwidths, kernel_mul, kernel_num)
        values.append(v)
        valid.append(True)
        bws.append(bw.detach())
    if num_groups == 0:
        return x.new_zeros(0), torch.zeros(0, dtype=torch.bool), x.new_zeros(0, s)
    return torch.stack(values), torch.tensor(valid), torch.stack(bws)


def _mmd2_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor,
    y_groups: torch.Tensor,
    bandwidths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_y) of Σ_g grad[g] · MMD²_g with each group's bandwidths [G, S] held fixed, as the
    op's backward computes them (autograd through :func:`mmd2_single`)."""
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    total = xr.sum() * 0 + yr.sum() * 0
    for g in range(grad.numel()):
        xs, ys = xr[x_groups == g], yr[y_groups == g]
        if xs.shape[0] and ys.shape[0]:
            total = total + grad[g] * mmd2_single(xs, ys, bandwidths[g])[0]
    gx, gy = torch.autograd.grad(total, (xr, yr))
    return gx, gy
