"""memory_update_ and segment_reduce against the plain references, CPU and CUDA."""

import pytest
import torch
import torch.nn.functional as F
from common import DEVICES, NEEDS_DEVICE

import uvireid_ext.reference as R
from uvireid_ext.ops.memory import memory_update_, segment_reduce


def _inputs(C: int, B: int, D: int, device: str, dtype=torch.float32, noise: bool = True):
    memory = F.normalize(torch.randn(C, D, dtype=dtype), dim=1).to(device)
    x = torch.randn(B, D, dtype=dtype).to(device)
    labels = torch.randint(0, C, (B,))
    if noise:
        labels[torch.rand(B) < 0.2] = -1
    return memory, x, labels.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_update_matches_sequential_loop(device, momentum, hard, dtype):
    # C < B forces many repeated labels: the batch order must be honoured.
    memory, x, labels = _inputs(7, 40, 33, device, dtype)
    ours, ref = memory.clone(), memory.cpu().clone()
    memory_update_(ours, x, labels, momentum, hard)
    R.memory_update_(ref, x.cpu(), labels.cpu(), momentum, hard)
    torch.testing.assert_close(ours.cpu(), ref)
    untouched = torch.ones(7, dtype=torch.bool)
    untouched[labels[labels >= 0].cpu()] = False
    assert torch.equal(ours.cpu()[untouched], memory.cpu()[untouched])


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


@pytest.mark.parametrize("device", DEVICES)
def test_memory_update_edge_cases(device):
    memory, x, _ = _inputs(3, 0, 5, device)
    before = memory.clone()
    memory_update_(memory, x, torch.zeros(0, dtype=torch.long, device=device), 0.2)  # empty batch
    memory_update_(memory, torch.randn(2, 5, device=device), torch.tensor([-1, -1], device=device), 0.2)
    assert torch.equal(memory, before)
    # A zero feature with momentum 0 gives a zero row, not NaN.
    memory_update_(memory, torch.zeros(1, 5, device=device), torch.tensor([1], device=device), 0.0)
    assert torch.equal(memory[1].cpu(), torch.zeros(5))


def test_memory_update_deterministic_and_no_autograd():
    memory, x, labels = _inputs(5, 64, 16, "cpu")
    x.requires_grad_(True)
    a, b = memory.clone(), memory.clone()
    memory_update_(a, x, labels, 0.2)
    memory_update_(b, x, labels, 0.2)
    assert torch.equal(a, b)
    assert a.grad_fn is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(labels=torch.tensor([0, 9])), r"memory_update_: labels\[1\] = 9 is out of range"),
        (
            dict(features=torch.randn(2, 5)),
            r"memory_update_: expected features.size\(1\) == memory.size\(1\) = 4, got 5",
        ),
        (
            dict(labels=torch.tensor([0, 1], dtype=torch.int32)),
            "memory_update_: expected labels of dtype int64",
        ),
        (dict(labels=torch.tensor([0, 1, 2])), r"memory_update_: expected labels.size\(0\) == 2, got 3"),
        (
            dict(features=torch.randn(2, 4, dtype=torch.float64)),
            "memory_update_: expected features of dtype float32",
        ),
        (dict(momentum=1.5), "memory_update_: expected 0 <= momentum <= 1, got 1.5"),
        (dict(memory=torch.randn(4, 3).t()), "memory_update_: expected memory to be contiguous"),
    ],
)
def test_memory_update_errors(kwargs, match):
    args = dict(
        memory=torch.randn(3, 4), features=torch.randn(2, 4), labels=torch.tensor([0, 1]), momentum=0.1
    )
    if "memory" in kwargs:
        args["features"] = torch.randn(2, kwargs["memory"].shape[1])
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        memory_update_(**args)


@pytest.mark.cuda
@NEEDS_DEVICE
def test_memory_update_mixed_devices():
    with pytest.raises(RuntimeError, match="memory_update_: expected features on the same device as memory"):
        memory_update_(
            torch.randn(3, 4, device="cuda"), torch.randn(2, 4), torch.tensor([0, 1], device="cuda"), 0.1
        )


def test_memory_update_opcheck():
    memory, x, labels = _inputs(5, 12, 8, "cpu")
    torch.library.opcheck(torch.ops.uvireid_ext.memory_update_.default, (memory, x, labels, 0.2, False))
    torch.library.opcheck(torch.ops.uvireid_ext.memory_update_.default, (memory, x, labels, 0.0, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "weighted_sum_by_count"])
@pytest.mark.parametrize("normalize", [False, True])
def test_segment_reduce_matches_reference(device, mode, normalize):
    x = torch.randn(50, 9, dtype=torch.float64)
    seg = torch.randint(-1, 6, (50,))
    seg[seg == 3] = -1  # an empty segment
    w = torch.rand(50, dtype=torch.float64)
    w[seg == 4] = 0.0  # zero weight sum: weighted mean gives a zero row, not NaN
    ours = segment_reduce(x.to(device), seg.to(device), 7, w.to(device), mode, normalize)
    ref = R.segment_reduce(x, seg, 7, w, mode, normalize)
    torch.testing.assert_close(ours.cpu(), ref)
    assert torch.equal(ours[3].cpu(), torch.zeros(9))
    assert not ours.isnan().any()


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


def test_segment_reduce_errors_and_opcheck():
    x, seg = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match=r"segment_reduce: segments\[2\] = 2 is out of range"):
        segment_reduce(x, seg, 2)
    with pytest.raises(RuntimeError, match="segment_reduce: mode 'weighted_mean' needs weights"):
        segment_reduce(x, seg, 3, None, "weighted_mean")
    with pytest.raises(ValueError, match="segment_reduce: unknown mode 'median'"):
        segment_reduce(x, seg, 3, None, "median")
    args = (x, seg, torch.rand(4), 3, "weighted_mean", True)
    torch.library.opcheck(torch.ops.uvireid_ext.segment_reduce.default, args)


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
