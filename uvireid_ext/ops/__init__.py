"""Typed wrappers over ``torch.ops.uvireid_ext``, their fake kernels and autograd, one module per family."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable)


def has_schema(name: str) -> bool:
    """Whether the loaded library defines ``uvireid_ext::<name>``."""
    try:
        torch._C._dispatch_find_schema_or_throw(f"uvireid_ext::{name}", "")
    except RuntimeError:
        return False
    return True


def register_fake(name: str) -> Callable[[F], F]:
    """``torch.library.register_fake`` for ``uvireid_ext::<name>``, skipped when the op is absent,
    so a missing build fails with one clear message at call time instead of at import."""

    def wrap(fn: F) -> F:
        if has_schema(name):
            torch.library.register_fake(f"uvireid_ext::{name}")(fn)
        return fn

    return wrap


# torch warns once per process that sparse CSR support is "in beta state" whenever a CSR tensor is
# built; the wrappers build them from kernel outputs, so that note is noise in users' output.
_CSR_BETA = r"Sparse CSR tensor support is in beta state"


def sparse_csr(crow: Tensor, col: Tensor, val: Tensor) -> Tensor:
    """The square [N, N] ``torch.sparse_csr_tensor`` of CSR arrays from our kernels (N = crow.numel() - 1),
    without torch's beta-state warning. Invariant checks are off explicitly: the kernels' outputs hold
    them by construction (sorted columns, crow from 0 to nnz), and leaving it implicit warns too."""
    n = crow.numel() - 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CSR_BETA, category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=(n, n), check_invariants=False)


def op(name: str) -> torch._ops.OpOverload:
    """The default overload of ``uvireid_ext::<name>``, or a clear error when the build is missing."""
    try:
        return getattr(torch.ops.uvireid_ext, name).default
    except AttributeError:
        from .. import assert_has_ops

        assert_has_ops()
        raise RuntimeError(f"uvireid_ext: op {name} is not defined by the loaded build; rebuild the package") from None
