"""The offline reference clusters like scikit-learn's AgglomerativeClustering."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering

from revisit.evaluation import metrics
from revisit.evaluation.reference import average_linkage, cut, sweep


def _blobs(seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 32))
    labels = [int(i) for i in rng.integers(0, 6, 120)]
    x = centers[labels] + rng.normal(scale=0.5, size=(120, 32))
    return x, labels


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.6, 0.9])
def test_cut_matches_sklearn(threshold: float) -> None:
    x, _ = _blobs()
    ours = cut(average_linkage(x), threshold)
    ref = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
    ).fit_predict(x)
    # same partition, whatever the label names
    assert metrics.bcubed(list(ref), list(ours)).f1 == pytest.approx(1.0)
    assert len(set(ours)) == len(set(ref))


def test_sweep_finds_the_separating_threshold() -> None:
    x, truth = _blobs(1)
    t, labels, curve = sweep(x, lambda lab: metrics.bcubed(truth, list(lab)).f1)
    assert metrics.bcubed(truth, list(labels)).f1 > 0.95
    assert max(c["score"] for c in curve) == pytest.approx(metrics.bcubed(truth, list(labels)).f1)
    assert t in [c["threshold"] for c in curve]
