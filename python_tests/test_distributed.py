"""distributed.py in a single process (world size 1): the helpers are no-ops, devices resolve as
documented; the two-process run is test_train.py's DDP test."""

from __future__ import annotations

import pytest
import torch

from uvireid_ext.distributed import all_gather_rows, broadcast, init_distributed, rank_world, resolve_device


def test_single_process_helpers_are_identities(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_world() == (0, 1)
    x = torch.arange(12.0).reshape(4, 3)
    assert all_gather_rows(x) is x
    assert broadcast(x) is x and torch.equal(x, torch.arange(12.0).reshape(4, 3))
    assert all_gather_rows(torch.zeros(0, 3)).shape == (0, 3)
    assert init_distributed("cpu") is False  # not launched by torchrun: no process group
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu") is False
    assert not torch.distributed.is_initialized()


def test_resolve_device(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="train: unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="eval: device 'mps' is not supported"):
        resolve_device("mps", "eval")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train: device 'cuda' requested but this torch"):
            resolve_device("cuda")
    # the LOCAL_RANK mapping, on a machine made to look like one with 4 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda") == torch.device("cuda", 3)  # a bare cuda: this process's local rank
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="device 'cuda:4' requested but only 4 GPU"):
        resolve_device("cuda:4")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda", 0)
