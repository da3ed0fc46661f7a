"""Every op on every input of its sample registry (op_samples.py), CPU and CUDA: the output
against the plain reference, torch.library.opcheck, gradients for the ops with autograd (mmd2),
and every bad input of ERROR_SAMPLES failing with its named error."""

from __future__ import annotations

import pytest
import torch
from common import DEVICES
from op_samples import ERROR_SAMPLES, REGISTRY, ErrorSample, Sample, run

import uvireid_ext.reference as R
from uvireid_ext.ops import op
from uvireid_ext.ops.mmd import mmd2

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def cases(keep=lambda s: True) -> list:  # noqa: ANN001
    return [pytest.param(name, s, id=f"{name}-{s.id}") for name, entry in REGISTRY.items()
            for s in entry.samples if keep(s)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, sample", cases())
def test_matches_reference(device: str, name: str, sample: Sample) -> None:
    args = sample.make(device)
    out = run(name, args)
    REGISTRY[name].check(args, out, sample)
    if sample.extra is not None:
        sample.extra(args, out)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, sample", cases(lambda s: s.opcheck))
def test_opcheck(device: str, name: str, sample: Sample) -> None:
    args = sample.make(device)
    if name == "mmd2":  # inputs that require grad: opcheck then tests the autograd registration too
        args = _with_grad(args)
    torch.library.opcheck(op(name), args)


def _with_grad(args: tuple) -> tuple:
    x, y = (a.detach().clone().requires_grad_() for a in args[:2])
    return (x, y, *args[2:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, sample", cases(lambda s: s.gradcheck))
def test_gradcheck(device: str, name: str, sample: Sample) -> None:
    x, y, xg, yg, groups, bw, mul, num = _with_grad(sample.make(device))
    assert torch.autograd.gradcheck(lambda a, b: mmd2(a, b, xg, yg, groups, bw, mul, num).values, (x, y))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, sample", cases(lambda s: s in REGISTRY["mmd2"].samples and s.id != "no-groups"))
def test_gradients_match_reference_autograd(device: str, name: str, sample: Sample) -> None:
    """Through the registered autograd (mmd2 -> _mmd2_backward), weighted per group, against autograd
    of the reference; the data-driven bandwidths carry no gradient (MMM computes them on .data)."""
    args = sample.make(device)
    x, y, *rest = _with_grad(args)
    w = torch.randn(args[4], dtype=x.dtype)
    (mmd2(x, y, *rest).values * w.to(device)).sum().backward()
    xr, yr, *ref_rest = _with_grad(tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
    (R.mmd2(xr, yr, *ref_rest)[0] * w).sum().backward()
    torch.testing.assert_close(x.grad.cpu(), xr.grad, **sample.tol)
    torch.testing.assert_close(y.grad.cpu(), yr.grad, **sample.tol)
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [pytest.param(e, id=f"{e.op}-{e.id}") for e in ERROR_SAMPLES])
def test_bad_input_is_named(device: str, bad: ErrorSample) -> None:
    args = bad.make(device)
    with pytest.raises(bad.error, match=bad.match):
        op(bad.op)(*args)


def test_registry_covers_every_op() -> None:
    schemas = {s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("uvireid_ext::")}
    assert set(REGISTRY) == schemas
    assert {e.op for e in ERROR_SAMPLES} >= schemas - {"_mmd2_backward"}
