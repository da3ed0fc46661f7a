import os
import random
import sys
import types

import numpy as np
import pytest
import torch

# torch.compile's on-disk caches are keyed on the graphs, not on the loaded op library: a graph
# compiled against another build (another checkout or branch, e.g. before an op was renamed) would be
# replayed with that build's op names. Each checkout keeps its own caches, under its build/ folder.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "build", "torchinductor")
)

# The emulated-CUDA session (tools/test_cuda_on_cpu.sh) loads the emulated op library in place of
# uvireid_ext._C: it defines the same ops, with the CUDA launchers registered for CPU tensors.
EMULATED_LIBRARY = os.environ.get("UVIREID_EMULATED_CUDA")
if EMULATED_LIBRARY:
    torch.ops.load_library(EMULATED_LIBRARY)
    sys.modules["uvireid_ext._C"] = types.ModuleType("uvireid_ext._C")

import uvireid_ext  # noqa: E402


def cuda_usable() -> bool:
    info = uvireid_ext.build_info
    return torch.cuda.is_available() and info is not None and bool(info.with_cuda)


def pytest_collection_modifyitems(config, items):
    if EMULATED_LIBRARY:  # only the `cuda` twins: the CPU kernels are not in the emulated library
        skip = pytest.mark.skip(reason="the emulated-CUDA session runs the `cuda` tests only")
        for item in items:
            if "cuda" not in item.keywords:
                item.add_marker(skip)
        return
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
