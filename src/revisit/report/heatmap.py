"""A camera's heatmap: where faces were seen in a period, as a density over the camera's
empty-scene background (vision/scenes), PNG.

The density is a 2-D histogram of sighting centres, smoothed with a Gaussian a fortieth of
the picture wide, coloured (blue: few, red: most) and laid over the background with an
opacity that grows with the density, so empty areas show the room as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

CANVAS_WIDTH = 640  # px of the PNG when there is no background


def render(points: Iterable[tuple[float, float]], width: int | None, height: int | None,
           background: bytes | None = None) -> bytes:
    """PNG of the density of ``points`` (camera coordinates, ``width`` x ``height``; when
    unknown, the points' extent) over ``background`` (JPEG at any size; None: a grid)."""
    xy = np.asarray([p for p in points if p[0] is not None], dtype=np.float64).reshape(-1, 2)
    if width is None or height is None:
        width = int(max(CANVAS_WIDTH, xy[:, 0].max() + 1 if len(xy) else 0))
        height = int(max(CANVAS_WIDTH * 3 / 4, xy[:, 1].max() + 1 if len(xy) else 0))
    canvas = _background(background, width, height)
    h, w = canvas.shape[:2]
    density = np.zeros((h, w), np.float32)
    if len(xy):
        cols = np.clip((xy[:, 0] * w / width).astype(int), 0, w - 1)
        rows = np.clip((xy[:, 1] * h / height).astype(int), 0, h - 1)
        np.add.at(density, (rows, cols), 1.0)
        density = cv2.GaussianBlur(density, (0, 0), sigmaX=max(1.0, w / 40))
    peak = float(density.max())
    if peak > 0:
        level = density / peak
        colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
        alpha = (np.clip(level * 1.5, 0, 1) * 0.65)[..., None]
        canvas = (canvas * (1 - alpha) + colours * alpha).astype(np.uint8)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:  # pragma: no cover - PNG encoding of a uint8 image does not fail
        raise RuntimeError("cannot encode the heatmap")
    return png.tobytes()


def _background(jpeg: bytes | None, width: int, height: int) -> np.ndarray:
    if jpeg:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is not None:
            return img
    w = CANVAS_WIDTH
    h = max(1, round(w * height / width))
    grid = np.full((h, w, 3), 235, np.uint8)
    for x in range(0, w, 40):
        grid[:, x] = 215
    for y in range(0, h, 40):
        grid[y, :] = 215
    return grid
