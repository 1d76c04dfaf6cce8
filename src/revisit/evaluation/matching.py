"""Match stored faces to truth faces within each frame by box overlap (IoU)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[float, float, float, float]  # x, y, w, h

MIN_IOU = 0.3


def iou(a: Box, b: Box) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    truth: Sequence[Box], found: Sequence[Box], min_iou: float = MIN_IOU
) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(truth index, found index, iou)`` maximising total IoU
    (Hungarian), keeping only pairs with IoU >= ``min_iou``."""
    if not truth or not found:
        return []
    m = np.array([[iou(t, f) for f in found] for t in truth])
    rows, cols = linear_sum_assignment(-m)
    return [(int(r), int(c), float(m[r, c])) for r, c in zip(rows, cols, strict=True)
            if m[r, c] >= min_iou]
