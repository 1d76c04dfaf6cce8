"""Offline reference: cluster all stored embeddings at once, with hindsight.

Average-linkage agglomerative clustering on cosine distance, i.e. scikit-learn's
``AgglomerativeClustering(metric="cosine", linkage="average", distance_threshold=t)``.
The tree is built once with SciPy (same algorithm; a test checks the labels agree) and
cut at every threshold of the sweep, instead of re-clustering per threshold. The best
threshold is picked against the truth, so this is an upper bound of what an offline
batch clusterer could do, not a deployable setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

DEFAULT_THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.30, 0.86, 0.025))
MAX_ITEMS = 15000  # the condensed distance matrix of n items takes 4n^2 bytes


def average_linkage(embeddings: np.ndarray) -> np.ndarray:
    """SciPy linkage matrix of average-linkage clustering on cosine distance."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    return linkage(x, method="average", metric="cosine")


def cut(tree: np.ndarray, threshold: float) -> np.ndarray:
    """Flat labels: clusters merged while their average cosine distance is below
    ``threshold`` (scikit-learn's ``distance_threshold`` semantics)."""
    # sklearn merges strictly below the threshold; fcluster keeps merges <= t
    return fcluster(tree, t=np.nextafter(threshold, -np.inf), criterion="distance")


def sweep(
    embeddings: np.ndarray,
    score: Callable[[np.ndarray], float],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> tuple[float, np.ndarray, list[dict[str, float]]]:
    """Cut the tree at each threshold; returns the best (threshold, labels) by ``score``
    and the whole curve ``[{"threshold", "score", "clusters"}]``."""
    n = len(embeddings)
    if n == 0:
        return float(thresholds[0]), np.zeros(0, int), []
    if n == 1:
        return float(thresholds[0]), np.ones(1, int), []
    tree = average_linkage(embeddings)
    best_t, best_labels, best_s = float(thresholds[0]), None, -np.inf
    curve = []
    for t in thresholds:
        labels = cut(tree, float(t))
        s = float(score(labels))
        curve.append({"threshold": float(t), "score": s, "clusters": int(labels.max())})
        if s > best_s:
            best_t, best_labels, best_s = float(t), labels, s
    assert best_labels is not None
    return best_t, best_labels, curve
