"""Load the compiled ops (uvireid_ext._C) and check that the build matches the running torch."""

from __future__ import annotations

import importlib
import logging
import warnings

import torch

logger = logging.getLogger(__name__)

REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps ."


def _version_tuple(v: str) -> tuple[int, int]:
    major, minor = v.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _check_build(info: object) -> None:
    """Raise if _C was built for a torch this process cannot load it into."""
    running = torch.__version__
    if _version_tuple(running) < _version_tuple(info.min_torch):  # type: ignore[attr-defined]
        raise ImportError(
            f"uvireid_ext was built for torch >= {info.min_torch} (built with {info.torch_version}), "  # type: ignore[attr-defined]
            f"but torch {running} is running. Rebuild from source: {REBUILD}"
        )
    if _version_tuple(running)[0] != _version_tuple(info.torch_version)[0]:  # type: ignore[attr-defined]
        raise ImportError(
            f"uvireid_ext was built with torch {info.torch_version}, but torch {running} is running. "  # type: ignore[attr-defined]
            f"Rebuild from source: {REBUILD}"
        )
    if info.with_cuda:  # type: ignore[attr-defined]
        built, have = info.cuda_version, torch.version.cuda  # type: ignore[attr-defined]
        if have is None or built.split(".")[0] != have.split(".")[0]:
            raise ImportError(
                f"uvireid_ext was built with CUDA {built} (torch {info.torch_version}), but the running "  # type: ignore[attr-defined]
                f"torch {running} has CUDA {have}. Rebuild from source: {REBUILD}"
            )


def load() -> tuple[bool, object | None, BaseException | None]:
    """Return (ops loaded, build info module, the error that stopped loading)."""
    try:
        info = importlib.import_module("uvireid_ext._build_info")
    except ImportError as e:
        return False, None, e
    _check_build(info)  # a mismatched build is an error, never a silent fallback
    if not info.with_cuda and torch.cuda.is_available():  # type: ignore[attr-defined]
        # pip hides the build's decision line; say it where the user will see it
        warnings.warn(f"uvireid_ext was built without its CUDA ops ({info.reason}), so they refuse CUDA tensors; "  # type: ignore[attr-defined]
                      "rebuild with: FORCE_CUDA=1 pip install -v --no-build-isolation --force-reinstall --no-deps .",
                      stacklevel=3)
    try:
        importlib.import_module("uvireid_ext._C")
    except (ImportError, OSError) as e:
        return False, info, e
    return True, info, None
