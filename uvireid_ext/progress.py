"""The one progress bar of the package (tqdm), shown only where it is wanted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(it: Iterable[T], desc: str, enabled: bool, total: int | None = None) -> Iterable[T]:
    """``it`` wrapped in a transient tqdm bar when ``enabled``, else ``it``. The bar is left out when
    stderr is not a terminal (logs, CI), where it would only add lines."""
    if not enabled:
        return it
    return tqdm(it, total=total, desc=desc, leave=False, disable=None)
