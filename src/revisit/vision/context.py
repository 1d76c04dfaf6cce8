"""What is around a face: the colours of the clothes just below it.

Within one visit clothes do not change, while a turning head changes the face's embedding
a lot; so the tracker (:mod:`revisit.identity.tracks`) compares the region below two
faces to tell whether consecutive snapshots show one person. A coarse hue/saturation and
brightness histogram is cheap, survives small pose and size changes, and keeps nothing
that identifies anyone (it is never stored).
"""

from __future__ import annotations

import cv2
import numpy as np

_HS_BINS = (8, 4)
_V_BINS = 4
SIZE = _HS_BINS[0] * _HS_BINS[1] + _V_BINS


def clothes_histogram(pixels: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray | None:
    """Normalised colour histogram of the region below a face (two face widths wide,
    from the chin to about the chest), or None when that region is outside the frame."""
    x, y, w, h = bbox
    height, width = pixels.shape[:2]
    x0, x1 = int(max(0, x - 0.5 * w)), int(min(width, x + 1.5 * w))
    y0, y1 = int(min(height, y + 1.15 * h)), int(min(height, y + 2.8 * h))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    hsv = cv2.cvtColor(pixels[y0:y1, x0:x1], cv2.COLOR_BGR2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, list(_HS_BINS), [0, 180, 0, 256]).ravel()
    v = cv2.calcHist([hsv], [2], None, [_V_BINS], [0, 256]).ravel()
    out = np.concatenate([hs / max(hs.sum(), 1e-9), v / max(v.sum(), 1e-9)]).astype(np.float32)
    return out / 2.0


def context_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient of two histograms: 1 for the same colours, 0 for none
    shared (docs/accuracy.md has what it gives for one person and for two)."""
    return float(np.sum(np.sqrt(np.maximum(a, 0) * np.maximum(b, 0))))
