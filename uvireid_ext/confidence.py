"""Per-sample label confidences from a 2-component Gaussian mixture on losses (docs/methods.md, MMM).

Each group of losses is min-max normalised on its own; the groups are concatenated into one
``sklearn.mixture.GaussianMixture(n_components=2, max_iter=100, tol=1e-2, reg_covar=5e-4)`` fit;
a sample's confidence is its posterior for the component with the smaller mean (clean samples
have small losses). MMM fits the two visible views together and the infrared losses separately:
``gmm_confidence(loss_v1, loss_v2)`` and ``gmm_confidence(loss_ir)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor

__all__ = ["gmm_confidence"]


def _normalise(loss: Tensor) -> np.ndarray:
    arr = loss.detach().double().cpu().numpy().reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError("gmm_confidence: losses hold NaN or Inf")
    if arr.size == 0:
        return arr
    lo, hi = arr.min(), arr.max()
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def gmm_confidence(
    *losses: Tensor,
    max_iter: int = 100,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    seed: int | None = 0,
) -> Tensor | tuple[Tensor, ...]:
    """Confidences in [0, 1] for one or more groups of per-sample losses fitted by one GMM.

    Args:
        losses: 1-D tensors of per-sample losses (any float dtype/device).
        max_iter, tol, reg_covar: the GaussianMixture settings (MMM's defaults).
        seed: ``random_state`` of the fit (MMM leaves it unseeded; None reproduces that).

    Returns:
        float32 confidences shaped and placed like each input (a tuple for several groups). When
        all normalised losses are equal (nothing to separate) every confidence is 1, with a warning.
    """
    if not losses:
        raise ValueError("gmm_confidence: expected at least one tensor of losses")
    for i, loss in enumerate(losses):
        if not isinstance(loss, Tensor) or loss.dim() != 1:
            raise ValueError(
                f"gmm_confidence: expected losses[{i}] to be a 1-D tensor, got {getattr(loss, 'shape', loss)}"
            )
    parts = [_normalise(loss) for loss in losses]
    joint = np.concatenate(parts)
    if joint.size < 2:
        raise ValueError(f"gmm_confidence: need at least 2 losses to fit 2 components, got {joint.size}")
    if np.unique(joint).size < 2:
        warnings.warn("gmm_confidence: all losses are equal; every confidence is 1", stacklevel=2)
        probs = np.ones_like(joint)
    else:
        gmm = GaussianMixture(
            n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
        )
        x = joint.reshape(-1, 1)
        gmm.fit(x)
        probs = gmm.predict_proba(x)[:, int(gmm.means_.argmin())]
    out, start = [], 0
    for loss, part in zip(losses, parts, strict=True):
        out.append(torch.as_tensor(probs[start : start + part.size], dtype=torch.float32).to(loss.device))
        start += part.size
    return out[0] if len(out) == 1 else tuple(out)
