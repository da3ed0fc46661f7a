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


def test_mmd2_magnitude_overflowing_float32_is_named():
    # At 1e30 the float32 bandwidths (mean squared distance ~1e60) overflowed to Inf and the value was
    # NaN; now a named error, while given bandwidths and float64 stay defined (and scale-free).
    x, y, xg, yg = _groups(7, 5, 2, torch.float32)
    with pytest.raises(ValueError, match=r"mmd2: the data-driven bandwidths of group \d overflow torch.float32"):
        mmd2(x * 1e30, y * 1e30, xg, yg, 2)
    bw = torch.tensor([0.5, 2.0])
    got = mmd2(x * 1e30, y * 1e30, xg, yg, 2, bw).values
    torch.testing.assert_close(got, R.mmd2(x * 1e30, y * 1e30, xg, yg, 2, bw)[0])
    assert torch.isfinite(got).all()
    xd, yd = x.double(), y.double()
    torch.testing.assert_close(mmd2(xd * 1e30, yd * 1e30, xg, yg, 2).values, mmd2(xd, yd, xg, yg, 2).values)


def test_mmd2_reference_agrees_near_float32_limit():
    # Squared distances ~1e37 fit float32, their sum over the pairs does not: the kernels sum in
    # float64, and so does the reference now (it returned Inf bandwidths and MMD² = 0).
    x, y, xg, yg = _groups(7, 5, 2, torch.float32)
    got = mmd2(x * 1e18, y * 1e18, xg, yg, 2)
    want = R.mmd2(x * 1e18, y * 1e18, xg, yg, 2)
    torch.testing.assert_close(got.values, want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.bandwidths, want[2], rtol=1e-4, atol=0)
    torch.testing.assert_close(got.values, mmd2(x, y, xg, yg, 2).values, rtol=1e-4, atol=1e-5)


def test_mmd2_double_backward_raises():
    x, y, xg, yg = _groups(6, 5, 2)
    x.requires_grad_()
    (gx,) = torch.autograd.grad(mmd2(x, y, xg, yg, 2).values.sum(), x, create_graph=True)
    assert gx.requires_grad  # part of the graph: its derivative is not silently zero ...
    with pytest.raises(RuntimeError, match="mmd2: double backward is not supported"):
        torch.autograd.grad((gx**2).sum() + x.sum(), x)  # ... it raises
    # first order unchanged, with or without create_graph
    (plain,) = torch.autograd.grad(mmd2(x, y, xg, yg, 2).values.sum(), x)
    torch.testing.assert_close(plain, gx.detach())


def test_mmd2_refuses_float_groups_and_sizes():
    x, y, xg, yg = _groups(6, 5, 2)
    with pytest.raises(TypeError, match="mmd2: x_groups must hold integer ids, got dtype torch.float32"):
        mmd2(x, y, xg.float() * 0.9, yg, 2)
    with pytest.raises(TypeError, match="mmd2: y_groups must hold integer ids, got dtype torch.bool"):
        mmd2(x, y, xg, yg > 0, 2)
    with pytest.raises(TypeError, match="mmd2: num_groups must be an integer, got 2.0"):
        mmd2(x, y, xg, yg, 2.0)
    with pytest.raises(ValueError, match="mmd2: num_groups = 1099511627776 needs an output of"):
        mmd2(x, y, xg, yg, 2**40)


def test_mmd2_bandwidth_floor():
    # A float32 bandwidth of 1e-39 gave a finite MMD² but a NaN gradient on CPU (1/b overflows the
    # kernel's float32 coefficient); given bandwidths now respect the data-driven rule's floor.
    x, y, xg, yg = _groups(6, 5, 2, torch.float32)
    for bad in (1e-39, 1e-13, 0.0, -2.0):
        with pytest.raises(ValueError, match=r"mmd2: expected bandwidths >= 1e-12 \(the floor of the data-driven"):
            mmd2(x, y, xg, yg, 2, torch.tensor([1.0, bad]))
    xr = x.clone().requires_grad_()
    mmd2(xr, y, xg, yg, 2, torch.tensor([1e-12, 1.0])).values.sum().backward()
    assert torch.isfinite(xr.grad).all()
