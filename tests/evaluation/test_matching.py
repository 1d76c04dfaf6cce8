"""IoU and one-to-one box matching."""

from __future__ import annotations

import pytest

from revisit.evaluation.matching import iou, match_boxes


def test_iou_known_values() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_match_is_one_to_one_and_optimal() -> None:
    truth = [(0, 0, 10, 10), (8, 0, 10, 10)]
    # found[0] overlaps both truths (IoU 0.54 and 0.33) but may be used only once
    found = [(3, 0, 10, 10), (11, 0, 10, 10)]
    pairs = match_boxes(truth, found, min_iou=0.3)
    assert sorted((t, f) for t, f, _ in pairs) == [(0, 0), (1, 1)]


def test_low_overlap_is_not_a_match() -> None:
    assert match_boxes([(0, 0, 10, 10)], [(6, 0, 10, 10)], min_iou=0.3) == []  # IoU 0.25
    assert len(match_boxes([(0, 0, 10, 10)], [(4, 0, 10, 10)], min_iou=0.3)) == 1  # IoU 0.43
    assert match_boxes([], [(0, 0, 1, 1)]) == []
