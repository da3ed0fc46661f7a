"""The one progress bar of the package: tqdm when it is installed and the bar is wanted, else nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(it: Iterable[T], desc: str, enabled: bool, total: int | None = None) -> Iterable[T]:
    """``it`` wrapped in a transient tqdm bar when ``enabled`` and tqdm is importable, else ``it``."""
    if enabled:
        try:
            from tqdm import tqdm  # optional
        except ImportError:
            return it
        return tqdm(it, total=total, desc=desc, leave=False)
    return it
