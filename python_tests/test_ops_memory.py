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
