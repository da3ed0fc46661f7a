"""Helpers shared by the op tests."""

import pytest

CUDA = pytest.param("cuda", marks=pytest.mark.cuda)
DEVICES = ["cpu", CUDA]
