"""Helpers shared by the op tests."""

import os

import pytest

# Path of the emulated-CUDA op library (tools/test_cuda_on_cpu.sh): its CUDA launchers run on the
# CPU, registered for CPU tensors in place of the CPU kernels, so the `cuda` twins use CPU tensors.
EMULATED = bool(os.environ.get("UVIREID_EMULATED_CUDA"))
CUDA_DEVICE = "cpu" if EMULATED else "cuda"
CUDA = pytest.param(CUDA_DEVICE, marks=pytest.mark.cuda, id="cuda")
DEVICES = ["cpu", CUDA]
# For `cuda` tests that need real CUDA tensors next to CPU ones (device mismatches, CPU vs CUDA).
NEEDS_DEVICE = pytest.mark.skipif(
    EMULATED, reason="needs CPU and CUDA tensors side by side; the emulated build has one"
)
