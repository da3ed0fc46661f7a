"""The op wrappers that build or read sparse CSR tensors print none of torch's sparse warnings."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
import torch

import uvireid_ext as U
from uvireid_ext.ops.cluster import dbscan
from uvireid_ext.ops.distance import jaccard, k_reciprocal_encode, knn, query_expansion


@pytest.fixture(autouse=True)
def warn_every_time() -> Iterator[None]:
    # torch issues the sparse warnings once per process (TORCH_WARN_ONCE); warn_always makes each
    # call warn, so that a test does not pass merely because an earlier test used up the warning.
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


def features(n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 8, generator=g)
    x = centres[torch.arange(n) % 6] + 0.3 * torch.randn(n, 8, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def sparse_messages(fn: Callable[[], object]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if "parse" in str(w.message)]


def test_torch_itself_warns_here() -> None:
    # The premise: without our wrappers, building a CSR tensor warns (else the tests below prove nothing).
    crow, col, val = torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.tensor([1.0, 2.0])
    found = sparse_messages(lambda: torch.sparse_csr_tensor(crow, col, val, size=(2, 2)))
    assert any("beta state" in m for m in found), found


def test_sparse_jaccard_distance_is_quiet() -> None:
    x = features()
    assert sparse_messages(lambda: U.jaccard_distance(x, 10, 4, max_distance=0.6)) == []
    assert sparse_messages(lambda: U.jaccard_distance(x[:0], 10, 4, max_distance=0.6)) == []


def test_encode_expand_jaccard_are_quiet() -> None:
    x = features()
    rank = knn(x, 10)[0]
    found = sparse_messages(lambda: jaccard(query_expansion(k_reciprocal_encode(x, rank, 10), rank, 4), 0.6))
    assert found == []


def test_dbscan_on_sparse_input_is_quiet() -> None:
    d = U.jaccard_distance(features(), 10, 4, max_distance=0.6)
    def run() -> None:
        labels = dbscan(d, 0.6, 4)
        assert labels.shape == (60,) and int(labels.max()) >= 1  # the six groups do cluster

    assert sparse_messages(run) == []
