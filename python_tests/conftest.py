import random

import numpy as np
import pytest
import torch

import uvireid_ext


def cuda_usable() -> bool:
    info = uvireid_ext.build_info
    return torch.cuda.is_available() and info is not None and bool(info.with_cuda)


def pytest_collection_modifyitems(config, items):
    if cuda_usable():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of uvireid_ext")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_rng():
    """Keep each test's random draws independent of the order tests run in."""
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.manual_seed(0)
    yield
    torch.set_rng_state(torch_state)
    random.setstate(py_state)
    np.random.set_state(np_state)
