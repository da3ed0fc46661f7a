"""GMM confidences: the lower-loss mode gets high confidence, groups normalised separately,
settings as MMM's, degenerate input handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from uvireid_ext.confidence import gmm_confidence


def two_modes(n_clean: int, n_noisy: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    clean = 0.2 + 0.05 * torch.randn(n_clean, generator=g)
    noisy = 2.0 + 0.3 * torch.randn(n_noisy, generator=g)
    return torch.cat([clean, noisy]) * scale


def test_clean_samples_confident() -> None:
    loss = two_modes(80, 20, 0)
    conf = gmm_confidence(loss)
    assert conf.dtype == torch.float32 and conf.shape == loss.shape
    assert conf[:80].min() > 0.9 and conf[80:].max() < 0.1


def test_matches_sklearn_with_mmm_settings() -> None:
    a, b = two_modes(50, 10, 1), two_modes(40, 20, 2, scale=5.0)
    ca, cb = gmm_confidence(a, b, seed=3)
    norm = [(t.double().numpy() - t.min().item()) / (t.max().item() - t.min().item()) for t in (a, b)]
    x = np.concatenate(norm).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-2, reg_covar=5e-4, random_state=3).fit(x)
    want = gmm.predict_proba(x)[:, gmm.means_.argmin()]
    np.testing.assert_allclose(torch.cat([ca, cb]).numpy(), want, rtol=1e-5, atol=1e-6)
    # Separate normalisation: the second group's scale does not matter.
    assert cb[:40].min() > 0.9


def test_degenerate_and_bad_input() -> None:
    with pytest.warns(UserWarning, match="gmm_confidence: all losses are equal"):
        assert gmm_confidence(torch.ones(5)).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="gmm_confidence: need at least 2 losses to fit 2 components, got 1"):
        gmm_confidence(torch.ones(1))
    with pytest.raises(ValueError, match="gmm_confidence: losses hold NaN or Inf"):
        gmm_confidence(torch.tensor([0.1, float("nan"), 0.3]))
    with pytest.raises(ValueError, match=r"gmm_confidence: expected losses\[0\] to be a 1-D tensor"):
        gmm_confidence(torch.ones(2, 2))
