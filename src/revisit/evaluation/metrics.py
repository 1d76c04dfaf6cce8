"""Clustering metrics over two labelings of the same items (truth vs prediction).

Pure functions on sequences of hashable labels, so they are easy to test by hand:
``truth[i]`` and ``pred[i]`` are the true identity and the predicted visitor of item i.

- BCubed (Bagga & Baldwin): per item, precision = share of its predicted cluster that has
  its true label, recall = share of its true class that landed in its predicted cluster;
  averaged over items. Weighs every sighting equally, so big clusters dominate.
- Pairwise: over all unordered item pairs, precision = same-true among same-predicted,
  recall = same-predicted among same-true. Counted from the contingency table, O(n).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PRF:
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _check(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> None:
    if len(truth) != len(pred):
        raise ValueError(f"labelings differ in length: {len(truth)} vs {len(pred)}")


def contingency(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> Counter:
    """Counts of (true label, predicted label) pairs."""
    _check(truth, pred)
    return Counter(zip(truth, pred, strict=True))


def bcubed(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> PRF:
    """BCubed precision, recall and F1 (1, 1, 1 for no items)."""
    n = len(truth)
    if n == 0:
        _check(truth, pred)
        return PRF(1.0, 1.0, 1.0)
    cont = contingency(truth, pred)
    t_size = Counter(truth)
    p_size = Counter(pred)
    # every item in cell (t, p) has precision cell/|p| and recall cell/|t|
    prec = sum(c * c / p_size[p] for (t, p), c in cont.items()) / n
    rec = sum(c * c / t_size[t] for (t, p), c in cont.items()) / n
    return PRF(prec, rec, _f1(prec, rec))


def _pairs(k: int) -> int:
    return k * (k - 1) // 2


def pairwise(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> PRF:
    """Pairwise precision, recall and F1. With no same-predicted (or same-true) pairs the
    corresponding score is 1 (nothing was wrongly joined / nothing needed joining)."""
    cont = contingency(truth, pred)
    tp = sum(_pairs(c) for c in cont.values())
    pred_pairs = sum(_pairs(c) for c in Counter(pred).values())
    true_pairs = sum(_pairs(c) for c in Counter(truth).values())
    prec = tp / pred_pairs if pred_pairs else 1.0
    rec = tp / true_pairs if true_pairs else 1.0
    return PRF(prec, rec, _f1(prec, rec))


def majority_map(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[Hashable, Hashable]:
    """For each true label, the predicted label holding most of its items (ties: the
    predicted label seen first)."""
    counts: dict[Hashable, Counter] = defaultdict(Counter)
    for t, p in zip(truth, pred, strict=True):
        counts[t][p] += 1
    return {t: c.most_common(1)[0][0] for t, c in counts.items()}


def over_merges(
    truth: Sequence[Hashable], pred: Sequence[Hashable], top: int | None = 10
) -> list[dict[str, object]]:
    """Predicted clusters that hold more than one true identity, worst (most identities,
    then most items) first: ``{"cluster", "size", "identities": {label: count}}``."""
    members: dict[Hashable, Counter] = defaultdict(Counter)
    for t, p in zip(truth, pred, strict=True):
        members[p][t] += 1
    bad = [(p, c) for p, c in members.items() if len(c) > 1]
    bad.sort(key=lambda pc: (-len(pc[1]), -sum(pc[1].values()), str(pc[0])))
    return [
        {"cluster": p, "size": sum(c.values()), "identities": dict(c.most_common())}
        for p, c in bad[:top]
    ]


def splits(
    truth: Sequence[Hashable], pred: Sequence[Hashable], top: int | None = 10
) -> list[dict[str, object]]:
    """True identities spread over more than one predicted cluster, worst first:
    ``{"identity", "size", "clusters": {label: count}}``."""
    members: dict[Hashable, Counter] = defaultdict(Counter)
    for t, p in zip(truth, pred, strict=True):
        members[t][p] += 1
    bad = [(t, c) for t, c in members.items() if len(c) > 1]
    bad.sort(key=lambda tc: (-len(tc[1]), -sum(tc[1].values()), str(tc[0])))
    return [
        {"identity": t, "size": sum(c.values()), "clusters": dict(c.most_common())}
        for t, c in bad[:top]
    ]


def count_error(true_count: int, found_count: int) -> float:
    """Signed relative error of a count, in percent (found vs true)."""
    if true_count == 0:
        return 0.0 if found_count == 0 else float("inf")
    return 100.0 * (found_count - true_count) / true_count
