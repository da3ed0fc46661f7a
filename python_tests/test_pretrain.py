"""The visible-only pretraining that stands in for ImageNet weights: its output loads like them, it is a
function of its seed, it learns, and it refuses bad input."""

from __future__ import annotations

import pytest
import torch

from uvireid_ext.model import build_model
from uvireid_ext.pretrain import pretrain_visible


def _images(ids: int = 4, per: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    # each identity one flat colour plus noise: learnable in a few dozen iterations
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (ids, 3), generator=g)
    pid = torch.arange(ids).repeat_interleave(per)
    noise = torch.randint(-20, 21, (ids * per, 32, 16, 3), generator=g)
    return (colours[pid][:, None, None, :] + noise).clamp(0, 255).to(torch.uint8), pid * 10 + 3


def test_state_loads_into_both_stems_and_is_a_function_of_the_seed(tmp_path):
    images, pid = _images()
    state, info = pretrain_visible(images, pid, iters=2, ids_per_batch=2, instances=2, seed=5)
    assert set(k.split(".")[0] for k in state) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert info["ids"] == 4 and info["images"] == 24 and info["iters"] == 2
    again, _ = pretrain_visible(images, pid, iters=2, ids_per_batch=2, instances=2, seed=5)
    other, _ = pretrain_visible(images, pid, iters=2, ids_per_batch=2, instances=2, seed=6)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(state["conv1.weight"], other["conv1.weight"])
    path = tmp_path / "w.pt"
    torch.save(state, path)
    model = build_model("small", str(path))
    assert torch.equal(model.visible.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.infrared.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])


def test_leaves_the_global_random_state_alone():
    images, pid = _images()
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    pretrain_visible(images, pid, iters=1, ids_per_batch=2, instances=2)
    assert torch.equal(torch.rand(3), want)


def test_learns_the_identities():
    images, pid = _images()
    _, info = pretrain_visible(images, pid, iters=40, ids_per_batch=4, instances=3, pad=1)
    assert info["loss_last"] < 0.5 * info["loss_first"]


@pytest.mark.parametrize("kwargs, message", [
    ({"iters": 0}, "iters must be >= 1, got 0"),
    ({"instances": 0}, "instances must be >= 1"),
    ({"ids_per_batch": 5}, "ids_per_batch=5 exceeds the 4 labelled identities"),
    ({"lr": 0.0}, "lr must be > 0 and weight_decay >= 0, got lr=0.0"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
])
def test_bad_arguments(kwargs, message):
    images, pid = _images()
    with pytest.raises(ValueError, match=message):
        pretrain_visible(images, pid, **kwargs)


def test_unlabelled_images_are_never_drawn():
    images, pid = _images()
    pid = pid.clone()
    pid[:6] = -1  # the first identity unlabelled: three classes remain
    _, info = pretrain_visible(images, pid, torch.arange(24) % 2, iters=2, ids_per_batch=3, instances=2)
    assert info["ids"] == 3
    with pytest.raises(ValueError, match="ids_per_batch=4 exceeds the 3 labelled identities"):
        pretrain_visible(images, pid, ids_per_batch=4)


def test_bad_shapes():
    images, pid = _images()
    with pytest.raises(ValueError, match=r"pretrain_visible: images must be \[N, H, W, 3\] uint8"):
        pretrain_visible(images.float(), pid)
    with pytest.raises(ValueError, match=r"pretrain_visible: pid must be \[N\] = \[24\]"):
        pretrain_visible(images, pid[:5])
    with pytest.raises(ValueError, match=r"pretrain_visible: cameras must be \[N\] = \[24\]"):
        pretrain_visible(images, pid, torch.zeros(3, dtype=torch.int64))
