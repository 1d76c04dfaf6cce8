"""Zones of a camera (image pixels): where people count, where nothing counts, and named
areas counted on their own.

- the *counting zone* (``count_zone``; none: the whole frame) is where a person counts
  toward the camera's occupancy;
- *exclusion zones* (``exclude``) count nothing and give no sightings: a poster, a screen,
  the staff area behind a counter, a window onto the street;
- *named zones* (``named``, e.g. "checkout 3 queue") are counted on their own, also
  inside an exclusion zone's complement only.

A person is where their counting point is (:class:`revisit.vision.people.Person`); a face
is where its box centre is.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Point = tuple[float, float]
MAX_COORD = 100_000  # px: far beyond any camera, small enough to catch unit mistakes


def _polygon(points: list[Point], what: str) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"{what} needs at least 3 points, got {len(points)}")
    if len(points) > 200:
        raise ValueError(f"{what} has {len(points)} points; at most 200")
    for x, y in points:
        if not (0 <= x <= MAX_COORD and 0 <= y <= MAX_COORD):
            raise ValueError(f"{what}: point ({x}, {y}) is outside 0..{MAX_COORD} px")
    return points


class CameraZones(BaseModel):
    """A camera's occupancy settings: whether it counts people, and its zones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    counting: bool = Field(False, description="Run the people counter on this camera's frames.")
    count_zone: list[Point] | None = Field(
        None, description="Polygon [[x, y], ...] in image pixels where people count; none: "
        "the whole frame.")
    exclude: list[list[Point]] = Field(
        default_factory=list, max_length=50,
        description="Polygons where nothing counts and faces give no sightings.")
    named: dict[str, list[Point]] = Field(
        default_factory=dict, max_length=50,
        description="Named polygons counted on their own, e.g. {\"checkout 3 queue\": [...]}.")
    overlap_group: str | None = Field(
        None, min_length=1, max_length=64,
        description="Cameras of a location in one group see the same area: the location "
        "takes their maximum, not their sum (docs/occupancy.md).")
    scale: float | None = Field(None, gt=0, le=10, description="Count calibration: "
                                "count = scale * people found + offset (none: the model's).")
    offset: float | None = Field(None, ge=-100, le=100, description="See scale.")

    @field_validator("count_zone")
    @classmethod
    def _count_zone(cls, v: list[Point] | None) -> list[Point] | None:
        return None if v is None else _polygon(v, "count_zone")

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: list[list[Point]]) -> list[list[Point]]:
        return [_polygon(p, f"exclude[{i}]") for i, p in enumerate(v)]

    @field_validator("named")
    @classmethod
    def _named(cls, v: dict[str, list[Point]]) -> dict[str, list[Point]]:
        for name in v:
            if not 0 < len(name) <= 64 or not name.strip():
                raise ValueError(f"zone name {name!r} must be 1-64 characters")
        return {k: _polygon(p, f"named zone {k!r}") for k, p in v.items()}

    def excluded(self, x: float, y: float) -> bool:
        return any(_inside(tuple(map(tuple, p)), x, y) for p in self.exclude)

    def counted(self, x: float, y: float) -> bool:
        """In the counting zone and in no exclusion zone."""
        if self.count_zone is not None and not _inside(tuple(map(tuple, self.count_zone)), x, y):
            return False
        return not self.excluded(x, y)

    def zones_of(self, x: float, y: float) -> list[str]:
        """The zones a point counts in: "" (the camera's counting zone) and named ones."""
        if self.excluded(x, y):
            return []
        out = [""] if self.counted(x, y) else []
        return out + [n for n, p in self.named.items() if _inside(tuple(map(tuple, p)), x, y)]


@functools.lru_cache(maxsize=4096)
def _contour(polygon: tuple[tuple[float, float], ...]) -> np.ndarray:
    return np.asarray(polygon, np.float32).reshape(-1, 1, 2)


def _inside(polygon: tuple[tuple[float, float], ...], x: float, y: float) -> bool:
    """Inside or on the edge."""
    return cv2.pointPolygonTest(_contour(polygon), (float(x), float(y)), False) >= 0


def mask_polygon(mask: np.ndarray) -> list[Point]:
    """The outline of the largest region of a binary mask (e.g. a data set's ROI image), as
    a counting zone."""
    found, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_SIMPLE)
    if not found:
        raise ValueError("the mask has no region")
    biggest = max(found, key=cv2.contourArea)
    approx = cv2.approxPolyDP(biggest, 1.5, True)
    return [(float(p[0][0]), float(p[0][1])) for p in approx]


def render_zones(zones: CameraZones, width: int | None, height: int | None,
                 background: bytes | None) -> bytes:
    """The camera's zones drawn over its empty scene (or a grey frame), PNG: the counting
    zone green, exclusion zones red, named zones blue with their names."""
    if background:
        img = cv2.imdecode(np.frombuffer(background, np.uint8), cv2.IMREAD_COLOR)
    else:
        points = [p for poly in [zones.count_zone or [], *zones.exclude, *zones.named.values()]
                  for p in poly]
        width = width or int(max((x for x, _ in points), default=640)) + 20
        height = height or int(max((y for _, y in points), default=480)) + 20
        scale = min(1.0, 480 / width)
        img = np.full((max(1, round(height * scale)), max(1, round(width * scale)), 3), 90,
                      np.uint8)
    s = img.shape[1] / (width or img.shape[1])
    overlay = img.copy()

    def poly(p: list[Point]) -> np.ndarray:
        return np.round(np.asarray(p, np.float32) * s).astype(np.int32).reshape(-1, 1, 2)

    if zones.count_zone:
        cv2.polylines(img, [poly(zones.count_zone)], True, (60, 200, 60), 2)
    for p in zones.exclude:
        cv2.fillPoly(overlay, [poly(p)], (40, 40, 220))
    for name, p in zones.named.items():
        cv2.polylines(img, [poly(p)], True, (230, 140, 30), 2)
        x, y = poly(p).reshape(-1, 2).min(axis=0)
        cv2.putText(img, name, (int(x) + 3, int(y) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (230, 140, 30), 1, cv2.LINE_AA)
    img = cv2.addWeighted(overlay, 0.4, img, 0.6, 0)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("could not encode the zones image")
    return png.tobytes()
