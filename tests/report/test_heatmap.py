"""The heatmap PNG: hot where the faces were, the background elsewhere."""

from __future__ import annotations

import cv2
import numpy as np

from revisit.report.heatmap import render


def _decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_hot_where_faces_were_over_the_background() -> None:
    bg = np.full((240, 320, 3), 90, np.uint8)  # a background stored at half size
    _ok, jpeg = cv2.imencode(".jpg", bg)
    points = [(100.0 + dx, 400.0 + dy) for dx in range(-5, 6) for dy in range(-5, 6)]
    img = _decode(render(points, 640, 480, jpeg.tobytes()))
    assert img.shape == (240, 320, 3)
    redness = np.clip(img[..., 2].astype(int) - img[..., 0].astype(int), 0, None)
    ys, xs = np.nonzero(redness > 40)
    assert len(xs) > 20
    assert abs(xs.mean() - 50) <= 3 and abs(ys.mean() - 200) <= 3  # (100, 400) at half size
    assert abs(int(img[20, 300, 1]) - 90) <= 3  # far from the faces: the room as it is


def test_without_background_or_points() -> None:
    img = _decode(render([], None, None))
    assert img.shape[1] == 640  # a plain grid
    img = _decode(render([(10.0, 10.0)], 1280, 720))
    assert img.shape[:2] == (360, 640)
