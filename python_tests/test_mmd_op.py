"""mmd2 / mmd2_backward against the per-group reference, gradcheck, CPU and CUDA."""

import pytest
import torch
from common import DEVICES, NEEDS_DEVICE

import uvireid_ext.reference as R
from uvireid_ext.ops.mmd import mmd2


def _groups(nx: int, ny: int, G: int, dtype=torch.float64, D: int = 6):
    x = torch.randn(nx, D, dtype=dtype)
    y = torch.randn(ny, D, dtype=dtype) + 0.3
    return x, y, torch.randint(0, G, (nx,)), torch.randint(0, G, (ny,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("given", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mmd2_forward_backward_match_reference(device, given, dtype):
    x, y, xg, yg = _groups(23, 17, 5, dtype)  # unequal, random set sizes per group
    xg[xg == 4] = 3  # group 4 has no x rows: skipped
    bw = torch.tensor([0.5, 2.0, 8.0], dtype=dtype) if given else None
    w = torch.randn(5, dtype=dtype)
    xd, yd = x.to(device, copy=True).requires_grad_(), y.to(device, copy=True).requires_grad_()
    out = mmd2(xd, yd, xg.to(device), yg.to(device), 5, None if bw is None else bw.to(device))
    (out.values * w.to(device)).sum().backward()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    values, valid, bws = R.mmd2(xr, yr, xg, yg, 5, bw)
    (values * w).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(out.values.detach().cpu(), values.detach(), **tol)
    torch.testing.assert_close(out.valid.cpu(), valid)
    torch.testing.assert_close(out.bandwidths.cpu(), bws, **tol)
    torch.testing.assert_close(xd.grad.cpu(), xr.grad, **tol)
    torch.testing.assert_close(yd.grad.cpu(), yr.grad, **tol)
    assert not bool(out.valid[4]) and float(out.values[4]) == 0.0
    assert torch.isfinite(out.values).all() and torch.isfinite(xd.grad).all()


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


@pytest.mark.parametrize("device", DEVICES)
def test_mmd2_gradcheck(device):
    x, y, xg, yg = _groups(9, 7, 3)
    x, y, xg, yg = (t.to(device) for t in (x, y, xg, yg))
    x.requires_grad_()
    y.requires_grad_()
    bw = torch.tensor([1.0, 4.0, 16.0], dtype=torch.float64, device=device)
    assert torch.autograd.gradcheck(lambda a, b: mmd2(a, b, xg, yg, 3, bw).values, (x, y))
    # The data-driven bandwidth carries no gradient (MMM computes it on .data): check the op's
    # gradient against the reference's autograd instead.
    ours = torch.autograd.grad(mmd2(x, y, xg, yg, 3).values.sum(), (x, y))
    xr, yr = x.detach().cpu().requires_grad_(), y.detach().cpu().requires_grad_()
    ref = torch.autograd.grad(R.mmd2(xr, yr, xg.cpu(), yg.cpu(), 3)[0].sum(), (xr, yr))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.cpu(), b)


def test_mmd2_stop_gradient_by_detach():
    x, y, xg, yg = _groups(6, 6, 2)
    x.requires_grad_()
    y.requires_grad_()
    mmd2(x, y.detach(), xg, yg, 2).values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None


def test_mmd2_edge_cases():
    # Identical points: MMD² = 0 and finite gradients (base bandwidth 0 is clamped).
    x = torch.ones(3, 4, dtype=torch.float64, requires_grad=True)
    out = mmd2(x, x.detach().clone(), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 1)
    out.values.sum().backward()
    assert float(out.values[0]) == 0.0 and torch.isfinite(x.grad).all()
    # One point per side; no groups at all; a group with neither side.
    x, y = torch.randn(1, 4), torch.randn(1, 4)
    out = mmd2(x, y, torch.tensor([1]), torch.tensor([1]), 3)
    assert out.valid.tolist() == [False, True, False] and float(out.values[1]) > 0
    out = mmd2(
        torch.randn(0, 4),
        torch.randn(0, 4),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        0,
    )
    assert out.values.shape == (0,) and out.bandwidths.shape == (0, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(x_groups=torch.tensor([0, 3, 1])),
            r"mmd2: x_groups\[1\] = 3 is out of range; expected 0 <= x_groups < num_groups = 2",
        ),
        (dict(y_groups=torch.tensor([-1, 0])), r"mmd2: y_groups\[0\] = -1 is out of range"),
        (dict(y=torch.randn(2, 5)), r"mmd2: expected y.size\(1\) == x.size\(1\) = 4, got 5"),
        (dict(y=torch.randn(2, 4, dtype=torch.float64)), "mmd2: expected y of dtype float32, got float64"),
        (
            dict(bandwidths=torch.tensor([1.0, -2.0])),
            r"mmd2: expected bandwidths > 0 and finite, got bandwidths\[1\] = -2",
        ),
        (dict(kernel_num=0), "mmd2: expected kernel_num >= 1, got 0"),
        (dict(x_groups=torch.tensor([0, 1])), r"mmd2: expected x_groups.size\(0\) == 3, got 2"),
    ],
)
def test_mmd2_errors(kwargs, match):
    args = dict(
        x=torch.randn(3, 4),
        y=torch.randn(2, 4),
        x_groups=torch.tensor([0, 1, 1]),
        y_groups=torch.tensor([0, 1]),
        num_groups=2,
    )
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        mmd2(**args)


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


def test_mmd2_opcheck_and_compile():
    x, y, xg, yg = _groups(8, 6, 3, torch.float32)
    torch.library.opcheck(torch.ops.uvireid_ext.mmd2.default, (x, y, xg, yg, 3, None, 2.0, 5))
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    torch.library.opcheck(
        torch.ops.uvireid_ext.mmd2.default, (xr, yr, xg, yg, 3, torch.tensor([1.0, 3.0]), 2.0, 5)
    )

    @torch.compile(fullgraph=True)
    def loss(a, b):
        out = mmd2(a, b, xg, yg, 3)
        return (out.values * out.valid).sum()

    xc = x.clone().requires_grad_()
    loss(xc, y).backward()
    xe = x.clone().requires_grad_()
    (R.mmd2(xe, y, xg, yg, 3)[0]).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-5)
