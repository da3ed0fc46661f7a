"""memory_update_ and segment_reduce beyond the sample registry (test_ops_registry.py): batch order,
momentum 0, the hard sample, determinism, the documented modes, torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from common import DEVICES, NEEDS_DEVICE
from op_samples import memory_inputs

import uvireid_ext.reference as R
from uvireid_ext.ops.memory import memory_update_, segment_reduce


def _inputs(C: int, B: int, D: int, device: str, dtype=torch.float32, noise: bool = True):  # noqa: ANN001, ANN202
    return tuple(t.to(device) for t in memory_inputs(C, B, D, dtype, noise))


@pytest.mark.parametrize("device", DEVICES)
def test_memory_update_order_matters(device):
    # Two samples on one row: the result is the sequential composition, not an average.
    memory = F.normalize(torch.tensor([[1.0, 0.0, 0.0]]), dim=1).to(device)
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], device=device)
    ab, ba = memory.clone(), memory.clone()
    memory_update_(ab, x, torch.tensor([0, 0], device=device), 0.5)
    memory_update_(ba, x.flip(0), torch.tensor([0, 0], device=device), 0.5)
    expected = F.normalize(
        0.5 * F.normalize(torch.tensor([0.5, 0.5, 0.0]), dim=0) + torch.tensor([0, 0, 0.5]), dim=0
    )
    torch.testing.assert_close(ab[0].cpu(), expected)
    assert not torch.allclose(ab, ba)


@pytest.mark.parametrize("device", DEVICES)
def test_momentum_zero_replaces_with_last_sample(device):
    memory, x, _ = _inputs(4, 6, 8, device)
    labels = torch.tensor([2, 0, 2, -1, 2, 0], device=device)
    memory_update_(memory, x, labels, 0.0)
    torch.testing.assert_close(memory[2], F.normalize(x[4], dim=0))
    torch.testing.assert_close(memory[0], F.normalize(x[5], dim=0))


@pytest.mark.parametrize("device", DEVICES)
def test_hard_uses_lowest_cosine_sample(device):
    memory = torch.tensor([[1.0, 0.0]], device=device)
    x = torch.tensor([[1.0, 0.1], [-1.0, 0.2], [0.5, 0.5]], device=device)
    memory_update_(memory, x, torch.zeros(3, dtype=torch.long, device=device), 0.0, hard=True)
    torch.testing.assert_close(memory[0], F.normalize(x[1], dim=0))


def test_memory_update_deterministic_and_no_autograd():
    memory, x, labels = _inputs(5, 64, 16, "cpu")
    x.requires_grad_(True)
    a, b = memory.clone(), memory.clone()
    memory_update_(a, x, labels, 0.2)
    memory_update_(b, x, labels, 0.2)
    assert torch.equal(a, b)
    assert a.grad_fn is None


@pytest.mark.cuda
@NEEDS_DEVICE
def test_memory_update_mixed_devices():
    with pytest.raises(RuntimeError, match="memory_update_: expected features on the same device as memory"):
        memory_update_(
            torch.randn(3, 4, device="cuda"), torch.randn(2, 4), torch.tensor([0, 1], device="cuda"), 0.1
        )


def test_segment_reduce_modes_differ_as_documented():
    x = torch.tensor([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]])
    seg = torch.tensor([0, 0, 1])
    w = torch.tensor([1.0, 0.5, 0.5])
    torch.testing.assert_close(segment_reduce(x, seg, 2), torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(
        segment_reduce(x, seg, 2, w, "weighted_mean"), torch.tensor([[8 / 3, 0.0], [1.0, 1.0]])
    )
    torch.testing.assert_close(
        segment_reduce(x, seg, 2, w, "weighted_sum_by_count"), torch.tensor([[2.0, 0.0], [0.5, 0.5]])
    )


def test_segment_reduce_unknown_mode():
    with pytest.raises(ValueError, match="segment_reduce: unknown mode 'median'"):
        segment_reduce(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 3, None, "median")


def test_compile_smoke():
    @torch.compile(fullgraph=True)
    def step(memory, x, labels):
        centroids = segment_reduce(x, labels, memory.shape[0], normalize=True)
        memory_update_(memory, x, labels, 0.1)
        return centroids

    memory, x, labels = _inputs(4, 10, 6, "cpu", noise=False)
    ref = memory.clone()
    out = step(memory, x, labels)
    R.memory_update_(ref, x, labels, 0.1)
    torch.testing.assert_close(memory, ref)
    torch.testing.assert_close(out, R.segment_reduce(x, labels, 4, normalize=True))


def test_memory_update_bumps_the_version_counter():
    # A graph that saved the memory (here for the gradient of w) must not backpropagate through the
    # updated values: autograd sees the new version and refuses.
    memory, x, labels = _inputs(4, 6, 8, "cpu", noise=False)
    w = torch.ones(4, 8, requires_grad=True)
    loss = (w * memory).sum()
    version = memory._version
    memory_update_(memory, x, labels, 0.5)
    assert memory._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_memory_update_refuses_a_memory_that_requires_grad():
    # As torch's own in-place ops (leaf.add_(1)): refused in grad mode, allowed under no_grad.
    memory, x, labels = _inputs(4, 6, 8, "cpu", noise=False)
    leaf = memory.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="memory_update_: memory is a leaf tensor that requires grad"):
        memory_update_(leaf, x, labels, 0.5)
    with pytest.raises(RuntimeError, match="memory_update_: memory is a tensor that requires grad"):
        memory_update_(leaf * 1, x, labels, 0.5)
    with torch.no_grad():
        memory_update_(leaf, x, labels, 0.5)
    ref = memory.clone()
    R.memory_update_(ref, x, labels, 0.5)
    torch.testing.assert_close(leaf.detach(), ref)


def test_memory_update_refuses_features_aliasing_the_memory():
    memory, _, _ = _inputs(6, 2, 8, "cpu")
    labels = torch.tensor([0, 1])
    for view in (memory[1:3], memory[:, :8], memory.t().t()[4:6], memory.view(-1)[3:19].view(2, 8)):
        with pytest.raises(ValueError, match="memory_update_: features share memory with memory"):
            memory_update_(memory, view, labels, 0.5)
    # A copy, or another slice of the same storage that does not overlap the memory, is fine.
    store = torch.randn(8, 8)
    bank, feats = store[:6], store[6:]
    ref = bank.clone()
    R.memory_update_(ref, feats.clone(), labels, 0.5)
    memory_update_(bank, feats, labels, 0.5)
    torch.testing.assert_close(bank, ref)
    memory_update_(memory, memory[1:3].clone(), labels, 0.5)


def test_memory_update_refuses_float_labels():
    memory, x, _ = _inputs(4, 2, 8, "cpu")
    with pytest.raises(TypeError, match="memory_update_: labels must hold integer ids, got dtype torch.float32"):
        memory_update_(memory, x, torch.tensor([0.9, 1.0]), 0.5)


def _segment_case(dtype=torch.float64, zero_weight: bool = False):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(0)
    x = torch.randn(14, 3, dtype=dtype, generator=g).requires_grad_()
    seg = torch.tensor([0, 1, 0, 1, 2, -1, 2, 0, 4, 4, 1, 2, 4, -1])
    w = torch.rand(14, dtype=dtype, generator=g) + 0.1
    if zero_weight:
        w[seg == 4] = 0.0
    return x, seg, w.requires_grad_()


@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "weighted_sum_by_count"])
@pytest.mark.parametrize("normalize", [False, True])
def test_segment_reduce_gradients(mode, normalize):
    x, seg, w = _segment_case()
    weights = None if mode == "mean" else w
    inputs = (x,) if weights is None else (x, weights)

    def f(*a):  # noqa: ANN002, ANN202
        return segment_reduce(a[0], seg, 6, a[1] if len(a) > 1 else None, mode, normalize)

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
    # the same gradients as autograd through the reference, segment 3 and 5 empty
    probe = torch.randn(6, 3, dtype=torch.float64)
    got = torch.autograd.grad((f(*inputs) * probe).sum(), inputs)
    want = torch.autograd.grad((R.segment_reduce(x, seg, 6, weights, mode, normalize) * probe).sum(), inputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_segment_reduce_zero_weight_sum_gradient():
    # A zero weight sum gives a zero row (weighted_mean) and zero weight gradients there; the
    # unnormalised weighted_sum_by_count stays differentiable at zero weights.
    x, seg, w = _segment_case(zero_weight=True)
    out = segment_reduce(x, seg, 6, w, "weighted_mean")
    gx, gw = torch.autograd.grad(out.sum(), (x, w))
    assert torch.equal(out[4].detach(), torch.zeros(3, dtype=torch.float64))
    assert (gw[seg == 4] == 0).all() and (gx[seg == 4] == 0).all() and torch.isfinite(gx).all()
    assert torch.autograd.gradcheck(lambda a, b: segment_reduce(a, seg, 6, b, "weighted_sum_by_count"), (x, w))


def test_segment_reduce_float32_gradient_flows():
    x, seg, w = _segment_case(torch.float32)
    out = segment_reduce(x, seg, 6, w, "weighted_sum_by_count", normalize=True)
    assert out.requires_grad
    out.sum().backward()
    assert x.grad is not None and w.grad is not None and x.grad.abs().sum() > 0


def test_segment_reduce_bad_sizes_and_ids():
    x = torch.randn(4, 3)
    seg = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"segment_reduce: num_segments = 1099511627776 needs an output of .* GiB, "
                                         r"more than the .* GiB of memory of device cpu"):
        segment_reduce(x, seg, 2**40)
    with pytest.raises(TypeError, match="segment_reduce: segments must hold integer ids, got dtype torch.float32"):
        segment_reduce(x, seg.float() * 0.9, 3)
    with pytest.raises(TypeError, match=r"segment_reduce: num_segments must be an integer, got 2.5"):
        segment_reduce(x, seg, 2.5)


def test_segment_reduce_gradient_of_left_out_rows_is_zero():
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    for num_segments, seg in ((0, torch.full((3,), -1)), (2, torch.tensor([-1, 1, -1]))):
        (g,) = torch.autograd.grad(segment_reduce(x, seg, num_segments, normalize=True).sum(), x)
        assert torch.equal(g[seg < 0], torch.zeros(int((seg < 0).sum()), 2, dtype=torch.float64))
