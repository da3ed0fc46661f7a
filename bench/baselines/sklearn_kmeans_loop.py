"""Multi-memories the way MMM's ``mmlm.py`` builds them: one scikit-learn KMeans(n_clusters=4,
random_state=0) per cluster, in a Python loop, falling back to the cluster mean when KMeans
cannot run (fewer members than centres). MMM pinned scikit-learn 1.3.2, whose default n_init
was 10; ``n_init`` is a parameter so both that and today's default ("auto" = 1) can be timed."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def kmeans_loop(features: np.ndarray, labels: np.ndarray, n: int = 4, n_init: int | str = 10) -> np.ndarray:
    """[C, n, D] sub-centres, C = labels.max() + 1."""
    c = int(labels.max()) + 1
    out = np.zeros((c, n, features.shape[1]), dtype=np.float32)
    for k in range(c):
        pts = features[labels == k]
        try:
            out[k] = KMeans(n_clusters=n, random_state=0, n_init=n_init).fit(pts).cluster_centers_
        except ValueError:  # fewer samples than clusters
            out[k] = pts.mean(0)
    return out
