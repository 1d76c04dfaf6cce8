"""Clustering metrics on hand-made labelings with answers worked out by hand."""

from __future__ import annotations

import pytest

from revisit.evaluation import metrics

TRUTH = ["a", "a", "a", "b", "b", "c"]
PRED = [1, 1, 2, 2, 2, 3]


def test_perfect_clustering_scores_one_whatever_the_label_names() -> None:
    truth = ["a", "a", "b", "c", "c", "c"]
    pred = ["x", "x", "y", "z", "z", "z"]
    for prf in (metrics.bcubed(truth, pred), metrics.pairwise(truth, pred)):
        assert (prf.precision, prf.recall, prf.f1) == (1.0, 1.0, 1.0)
    assert metrics.over_merges(truth, pred) == []
    assert metrics.splits(truth, pred) == []


def test_all_merged() -> None:
    truth = ["a", "a", "b", "b"]
    pred = [1, 1, 1, 1]
    b = metrics.bcubed(truth, pred)
    assert b.precision == pytest.approx(0.5) and b.recall == 1.0
    assert b.f1 == pytest.approx(2 / 3)
    p = metrics.pairwise(truth, pred)
    # 6 predicted pairs, 2 of them true
    assert p.precision == pytest.approx(1 / 3) and p.recall == 1.0
    assert metrics.over_merges(truth, pred) == [
        {"cluster": 1, "size": 4, "identities": {"a": 2, "b": 2}}
    ]


def test_all_split() -> None:
    truth = ["a", "a", "b", "b"]
    pred = [1, 2, 3, 4]
    b = metrics.bcubed(truth, pred)
    assert b.precision == 1.0 and b.recall == pytest.approx(0.5)
    p = metrics.pairwise(truth, pred)
    assert p.precision == 1.0 and p.recall == 0.0 and p.f1 == 0.0
    assert [s["identity"] for s in metrics.splits(truth, pred)] == ["a", "b"]


def test_bcubed_worked_example() -> None:
    # clusters {a,a} {a,b,b} {c}: precision per item 1,1,1/3,2/3,2/3,1 -> 14/18;
    # recall per item 2/3,2/3,1/3,1,1,1 -> 14/18
    b = metrics.bcubed(TRUTH, PRED)
    assert b.precision == pytest.approx(7 / 9)
    assert b.recall == pytest.approx(7 / 9)
    assert b.f1 == pytest.approx(7 / 9)


def test_pairwise_worked_example() -> None:
    # predicted pairs 1 + 3 = 4, true pairs 3 + 1 = 4, both: (0,1) and (3,4) = 2
    p = metrics.pairwise(TRUTH, PRED)
    assert (p.precision, p.recall, p.f1) == pytest.approx((0.5, 0.5, 0.5))


def test_merges_splits_and_majority_on_worked_example() -> None:
    assert metrics.over_merges(TRUTH, PRED) == [
        {"cluster": 2, "size": 3, "identities": {"b": 2, "a": 1}}
    ]
    assert metrics.splits(TRUTH, PRED) == [
        {"identity": "a", "size": 3, "clusters": {1: 2, 2: 1}}
    ]
    assert metrics.majority_map(TRUTH, PRED) == {"a": 1, "b": 2, "c": 3}


def test_length_mismatch_and_empty() -> None:
    with pytest.raises(ValueError):
        metrics.bcubed(["a"], [1, 2])
    assert metrics.bcubed([], []).f1 == 1.0
    assert metrics.count_error(100, 90) == pytest.approx(-10.0)
    assert metrics.count_error(0, 0) == 0.0


def test_over_merges_and_splits_list_the_worst_first() -> None:
    # cluster 1 holds three identities (a, b, c), cluster 2 two (d, e): 1 is worse;
    # identity x is spread over three clusters, y over two: x is worse
    truth = ["a", "b", "c", "d", "e", "x", "x", "x", "y", "y"]
    pred = [1, 1, 1, 2, 2, 3, 4, 5, 6, 7]
    assert [m["cluster"] for m in metrics.over_merges(truth, pred)] == [1, 2]
    assert [m["cluster"] for m in metrics.over_merges(truth, pred, top=1)] == [1]
    assert [s["identity"] for s in metrics.splits(truth, pred)] == ["x", "y"]
    # same number of identities: the bigger cluster first
    truth2 = ["a", "b", "b", "b", "c", "d"]
    pred2 = [1, 1, 1, 1, 2, 2]
    assert [m["cluster"] for m in metrics.over_merges(truth2, pred2)] == [1, 2]


def test_count_error_with_nothing_true_but_something_found_is_infinite() -> None:
    assert metrics.count_error(0, 5) == float("inf")
    assert metrics.count_error(10, 15) == pytest.approx(50.0)
