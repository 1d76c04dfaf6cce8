"""People counting for occupancy: person boxes in, one counting point per person out.

The face detector misses everyone who looks away or is too small, so occupancy counts
people with a person detector instead, then corrects its systematic miss rate with a
per-camera linear :class:`Calibration`. The facts of the model (input size, threshold,
tiling, point rule) live on :class:`PersonDetector`; benchmarks/occupancy.py measured the
alternatives (docs/occupancy.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from revisit.vision.model import InferenceModel, openvino_net

PERSON_WEIGHTS = Path(__file__).parent / "weights" / "person-detection-retail-0013"


@dataclass(frozen=True, slots=True)
class Person:
    """One detected person: box (x, y, w, h) and counting point in image pixels."""

    bbox: tuple[int, int, int, int]
    score: float
    point: tuple[float, float]


@dataclass(frozen=True)
class Calibration:
    """count = max(0, scale * raw + offset), fitted per camera on frames with known counts.

    A detector misses a share of people that depends on the camera (height, angle, crowd
    density), so a raw count is biased; a straight line fitted on a few labelled frames of
    that camera removes most of the bias. The defaults were fitted on the Mall camera.
    """

    scale: float = 0.9227
    offset: float = 4.3103

    def apply(self, raw: float) -> float:
        return max(0.0, self.scale * raw + self.offset)

    @classmethod
    def fit(cls, raw_counts: Sequence[float], true_counts: Sequence[float]) -> Calibration:
        """Least-squares line from raw detector counts to true counts (>= 2 distinct raws)."""
        x = np.asarray(raw_counts, dtype=np.float64)
        y = np.asarray(true_counts, dtype=np.float64)
        if x.shape != y.shape or x.size < 2 or np.ptp(x) == 0:
            raise ValueError("need at least two frames with different raw counts")
        scale, offset = np.polyfit(x, y, 1)
        return cls(scale=float(scale), offset=float(offset))


def in_mask(points: Sequence[tuple[float, float]], mask: np.ndarray) -> list[bool]:
    """Whether each point falls on a non-zero pixel of ``mask`` (points off the image: no)."""
    h, w = mask.shape[:2]
    out = []
    for x, y in points:
        xi, yi = int(x), int(y)
        out.append(0 <= xi < w and 0 <= yi < h and bool(mask[yi, xi]))
    return out


def count_in_mask(people: Sequence[Person], mask: np.ndarray | None) -> int:
    """People whose counting point lies in the region (all of them without a mask)."""
    if mask is None:
        return len(people)
    return sum(in_mask([p.point for p in people], mask))


def tile_grid(width: int, height: int, tiles: tuple[int, int], overlap: float
              ) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of ``tiles`` = (columns, rows) tiles that overlap by ``overlap`` of
    a tile, so a person cut by one tile's edge is whole in its neighbour."""
    cols, rows = tiles
    tw = width / (cols - (cols - 1) * overlap)
    th = height / (rows - (rows - 1) * overlap)
    out = []
    for j in range(rows):
        for i in range(cols):
            x0, y0 = round(i * tw * (1 - overlap)), round(j * th * (1 - overlap))
            out.append((x0, y0, min(width, round(x0 + tw)), min(height, round(y0 + th))))
    return out


def merge_boxes(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Greedy NMS over (x0, y0, x1, y1, score) rows by intersection over the SMALLER box:
    a tile edge leaves a cut-off part of a person inside the whole box from the
    neighbouring tile, which plain IoU would keep as a second person."""
    if len(boxes) == 0:
        return boxes
    boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dropped = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if dropped[i]:
            continue
        keep.append(i)
        iw = np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0])
        ih = np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        dropped |= inter / np.maximum(np.minimum(area[i], area), 1e-9) > overlap
    return boxes[keep]


class PersonDetector(InferenceModel):
    """Intel person-detection-retail-0013 (OpenVINO IR, shipped inside revisit).

    People at the back of a mall are a few dozen pixels tall, below what the model sees at
    its input size, so by default each frame is cut into overlapping tiles that are each
    enlarged to the input size; the tiles' boxes are merged. The counting point is the
    head (``point_rule = "head"``: ``head_offset`` of the box height below its top): heads
    stay visible in a crowd where feet do not, and a zone drawn on the floor where heads
    pass is what the labels mark. The threshold is low on purpose: the calibration that
    follows corrects the count, and a low threshold misses fewer distant people.
    """

    task = "detector"
    name = "person-detection-retail-0013"
    licence = "person-detection-retail-0013 weights: Apache-2.0 (Intel Open Model Zoo)"
    commercial_use_ok = True
    weights: ClassVar[Path] = PERSON_WEIGHTS / "person-detection-retail-0013.xml"
    input_size: ClassVar[tuple[int, int]] = (544, 320)  # width, height
    default_threshold: ClassVar[float] = 0.10
    default_tiles: ClassVar[tuple[int, int]] = (2, 2)  # columns, rows
    tile_overlap: ClassVar[float] = 0.25
    merge_overlap: ClassVar[float] = 0.7
    point_rule: ClassVar[str] = "head"  # "head" | "foot" | "centre"
    head_offset: ClassVar[float] = 0.1

    def __init__(self, threads: int = 1, threshold: float | None = None,
                 tiles: tuple[int, int] | None = None, flip: bool = False) -> None:
        super().__init__(threads)
        self.threshold = self.default_threshold if threshold is None else threshold
        self.tiles = self.default_tiles if tiles is None else tiles
        self.flip = flip

    def _load(self) -> None:
        w, h = self.input_size
        # bf16 where the CPU computes it, as SFace (resolve_precision)
        self._net: Any = openvino_net(self.weights, self.threads, [1, 3, h, w], "auto")

    def predict(self, batch: Sequence[np.ndarray]) -> list[list[Person]]:
        return super().predict(batch)

    def _predict(self, batch: Sequence[np.ndarray]) -> list[list[Person]]:
        return [self._detect(image) for image in batch]

    def _detect(self, image: np.ndarray) -> list[Person]:
        height, width = image.shape[:2]
        regions = self._regions(width, height)
        parts = [self._boxes(image[y0:y1, x0:x1], x0, y0, flip)
                 for x0, y0, x1, y1 in regions for flip in ((False, True) if self.flip else (False,))]
        boxes = np.vstack(parts)
        if len(parts) > 1:
            boxes = merge_boxes(boxes, self.merge_overlap)
        return [self._person(b, width, height) for b in boxes]

    def _regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        return tile_grid(width, height, self.tiles, self.tile_overlap)

    def _boxes(self, crop: np.ndarray, x0: int, y0: int, flip: bool) -> np.ndarray:
        """(x0, y0, x1, y1, score) rows in image pixels for one tile, at or above threshold."""
        th, tw = crop.shape[:2]
        if float(crop.std()) < 1.0:  # flat (a black, dead-camera tile): the model sees ghosts
            return np.empty((0, 5), dtype=np.float32)
        if flip:
            crop = crop[:, ::-1]
        blob = cv2.resize(crop, self.input_size).transpose(2, 0, 1)[None].astype(np.float32)
        out = np.asarray(self._net(blob)[self._net.output(0)], dtype=np.float32).reshape(-1, 7)
        out = out[(out[:, 0] >= 0) & (out[:, 2] >= self.threshold)]
        xs, ys = out[:, [3, 5]], out[:, [4, 6]]
        if flip:
            xs = 1.0 - xs[:, ::-1]
        return np.column_stack([np.clip(xs[:, 0], 0, 1) * tw + x0, np.clip(ys[:, 0], 0, 1) * th + y0,
                                np.clip(xs[:, 1], 0, 1) * tw + x0, np.clip(ys[:, 1], 0, 1) * th + y0,
                                out[:, 2]])

    def _person(self, box: np.ndarray, width: int, height: int) -> Person:
        x0, y0, x1, y1, score = (float(v) for v in box)
        cx = (x0 + x1) / 2
        py = {"head": y0 + self.head_offset * (y1 - y0), "foot": y1,
              "centre": (y0 + y1) / 2}[self.point_rule]
        ix0, iy0 = min(int(x0), width - 1), min(int(y0), height - 1)
        bbox = (ix0, iy0, max(1, min(round(x1), width) - ix0), max(1, min(round(y1), height) - iy0))
        return Person(bbox=bbox, score=score, point=(min(cx, width - 1.0), min(py, height - 1.0)))

    def count(self, images: Sequence[np.ndarray], mask: np.ndarray | None = None,
              calibration: Calibration | None = None) -> list[float]:
        """Calibrated people count per frame inside ``mask`` (the camera's counting region)."""
        cal = calibration or Calibration()
        return [cal.apply(count_in_mask(people, mask)) for people in self.predict(images)]
