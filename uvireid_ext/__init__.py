"""uvireid_ext: C++/CUDA torch ops for clustering-based unsupervised visible-infrared re-ID.

Ops are registered as ``torch.ops.uvireid_ext.<op>``; the typed wrappers below validate arguments
and work with ``torch.compile``. ``uvireid_ext.reference`` holds a plain-PyTorch version of every op.
"""

import torch  # noqa: F401  (must be imported before the extension: it provides the symbols _C needs)

from ._loader import load as _load

HAS_OPS, build_info, _load_error = _load()


def assert_has_ops() -> None:
    """Raise a clear error when the compiled ops are missing."""
    if not HAS_OPS:
        raise RuntimeError(
            "uvireid_ext: the compiled ops (uvireid_ext._C) could not be loaded "
            f"({_load_error!r}). Build them from the source tree with: "
            "pip install --no-build-isolation ."
        )


from .ops.cluster import dbscan, dbscan_csr, segmented_kmeans  # noqa: E402
from .ops.distance import jaccard, jaccard_distance, k_reciprocal_encode, knn, query_expansion  # noqa: E402
from .ops.memory import SEGMENT_MODES, memory_update_, segment_reduce  # noqa: E402
from .ops.mmd import MMD2Result, mmd2  # noqa: E402
from .rerank import re_rank  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "HAS_OPS",
    "MMD2Result",
    "SEGMENT_MODES",
    "assert_has_ops",
    "build_info",
    "dbscan",
    "dbscan_csr",
    "jaccard",
    "jaccard_distance",
    "k_reciprocal_encode",
    "knn",
    "memory_update_",
    "mmd2",
    "query_expansion",
    "re_rank",
    "segment_reduce",
    "segmented_kmeans",
]
