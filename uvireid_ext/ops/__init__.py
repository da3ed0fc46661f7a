"""Typed wrappers over ``torch.ops.uvireid_ext``, their fake kernels and autograd, one module per family."""

from __future__ import annotations

import os
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


# ------------------------------------------------------------------------------ shared argument checks


def checking() -> bool:
    """Whether the wrappers run their data-dependent checks (values, storage): not while tracing
    under ``torch.compile``, where tensors hold no data (the kernels still check what they can)."""
    return not torch.compiler.is_compiling()


def int_arg(fn: str, arg: str, value: object) -> int:
    """``value`` as an int, refusing bools, floats and other non-integers (as torch does for sizes)
    instead of truncating them."""
    if isinstance(value, torch.SymInt):
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{fn}: {arg} must be an integer, got {value!r} ({type(value).__name__})")
    return value.__index__()  # type: ignore[union-attr]


def int_ids(fn: str, arg: str, ids: Tensor) -> Tensor:
    """Refuses ``ids`` (labels, segments, groups, indices) of a non-integer dtype: converting 0.9 to
    int64 would give 0 silently. Bool is refused too: it is a mask, not an id."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{fn}: {arg} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{fn}: {arg} must hold integer ids, got dtype {ids.dtype}")
    return ids


def check_output_fits(fn: str, arg: str, count: int, row_bytes: int, device: torch.device) -> None:
    """Refuses a ``count`` (num_segments, num_groups, num_clusters) whose output of ``count`` rows of
    ``row_bytes`` each exceeds the device's whole memory (physical RAM on CPU): such a size is a bug
    in the caller, and the allocation would fail with a bare ``bad_alloc`` / out-of-memory."""
    if isinstance(count, torch.SymInt) or not checking():
        return
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = count * max(row_bytes, 1)
    if need > total:
        raise ValueError(
            f"{fn}: {arg} = {count} needs an output of {need / 2**30:.1f} GiB, more than the "
            f"{total / 2**30:.1f} GiB of memory of device {device}"
        )


def unique_rank_rows(fn: str, rank: Tensor, cols: int) -> None:
    """Refuses a kNN ``rank`` argument whose first ``cols`` columns repeat an index within a row: a
    neighbour list holds every row once, and a repeat would count that neighbour twice."""
    if not checking() or not isinstance(rank, Tensor) or rank.dim() != 2 or rank.numel() == 0:
        return
    head = rank[:, : max(int(cols), 0)]
    if head.shape[1] < 2:
        return
    repeated = (head.sort(dim=1).values.diff(dim=1) == 0).any(dim=1)
    if bool(repeated.any()):
        row = int(repeated.nonzero()[0])
        raise ValueError(f"{fn}: rank row {row} repeats an index in its first {head.shape[1]} columns: "
                         f"{rank[row, : head.shape[1]].tolist()}")


def finite_rows(fn: str, arg: str, x: Tensor) -> None:
    """Refuses NaN or Inf in the rows of ``x``, naming the first such row."""
    if not checking() or x.numel() == 0:
        return
    # One pass screens: a NaN or Inf makes the sum non-finite. Only a non-finite sum (or an overflow
    # of finite values) pays for the element-wise test that finds the row. The sum runs in x's own
    # dtype: a float64 accumulation of float32 costs about 25 times more (13 ms at 3,000 x 2,048).
    if bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{fn}: {arg} row {int(bad.nonzero()[0])} is not finite (NaN or Inf)")
