"""mmd2 beyond the sample registry (test_ops_registry.py): MMM's equal-size formula, stop-gradient by
detach, mixed devices, torch.compile."""

import pytest
import torch
from common import NEEDS_DEVICE
from op_samples import mmd_groups

import uvireid_ext.reference as R
from uvireid_ext.ops.mmd import mmd2


def _groups(nx: int, ny: int, G: int, dtype=torch.float64, D: int = 6):  # noqa: ANN001, ANN202
    return mmd_groups(nx, ny, G, dtype, D)


def test_mmd2_matches_mmm_equal_size_formula():
    # MMM's MMD_loss: mean(K_xx + K_yy − K_xy − K_yx) on the pooled 4+4 points, 5 kernels.
    x, y = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    total = torch.cat([x, y])
    d = torch.cdist(total, total) ** 2
    b = d.sum() / (64 - 8) / 2 ** (5 // 2)
    k = sum(torch.exp(-d / (b * 2**i)) for i in range(5))
    expected = (k[:4, :4] + k[4:, 4:] - k[:4, 4:] - k[4:, :4]).mean()
    got = mmd2(x, y, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 1).values[0]
    torch.testing.assert_close(got, expected)


def test_mmd2_stop_gradient_by_detach():
    x, y, xg, yg = _groups(6, 6, 2)
    x.requires_grad_()
    y.requires_grad_()
    mmd2(x, y.detach(), xg, yg, 2).values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None


@pytest.mark.cuda
@NEEDS_DEVICE
def test_mmd2_mixed_devices():
    with pytest.raises(RuntimeError, match="mmd2: expected y on the same device as x"):
        mmd2(
            torch.randn(3, 4, device="cuda"),
            torch.randn(2, 4),
            torch.zeros(3, dtype=torch.long, device="cuda"),
            torch.zeros(2, dtype=torch.long),
            1,
        )


def test_mmd2_compile():
    x, y, xg, yg = _groups(8, 6, 3, torch.float32)

    @torch.compile(fullgraph=True)
    def loss(a, b):
        out = mmd2(a, b, xg, yg, 3)
        return (out.values * out.valid).sum()

    xc = x.clone().requires_grad_()
    loss(xc, y).backward()
    xe = x.clone().requires_grad_()
    (R.mmd2(xe, y, xg, yg, 3)[0]).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-5)
