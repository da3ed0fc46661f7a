"""The inter-modality MMD as users run it today: MMM's ``MMD_loss`` (multi-kernel, data-driven
bandwidth computed on ``.data``) called once per identity in a Python loop, written by us from
docs/methods.md (MMM, SCA inter). Baseline of bench/bench_mmd.py."""

from __future__ import annotations

import torch


def gaussian_kernel(source: torch.Tensor, target: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5):
    total = torch.cat([source, target], dim=0)
    n = total.shape[0]
    diff = total.unsqueeze(0) - total.unsqueeze(1)
    l2 = (diff**2).sum(2)
    bandwidth = torch.sum(l2.data) / (n * n - n)
    bandwidth = bandwidth / kernel_mul ** (kernel_num // 2)
    return sum(torch.exp(-l2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))


def mmd_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MMD² of two equal-size sets: mean(K_xx + K_yy − K_xy − K_yx)."""
    b = source.shape[0]
    k = gaussian_kernel(source, target)
    return torch.mean(k[:b, :b] + k[b:, b:] - k[:b, b:] - k[b:, :b])


def mmd_per_identity(
    f_v: torch.Tensor, f_r: torch.Tensor, y_v: torch.Tensor, y_r: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch identities of MMD(f_v^c, sg f_r^c), one identity at a time."""
    ids = torch.unique(y_v)
    total = f_v.new_zeros(())
    for c in ids:
        total = total + mmd_loss(f_v[y_v == c], f_r[y_r == c].detach())
    return total / ids.numel()
