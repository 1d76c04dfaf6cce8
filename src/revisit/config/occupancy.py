"""Occupancy settings: a camera's zones (image pixels) and a location's capacity and
levels. Part of the settings schema (``occupancy.cameras`` / ``occupancy.locations`` and
the admin API's zone and capacity bodies), validated with the rest at start; counting with
them is :mod:`revisit.occupancy`.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

Point = tuple[float, float]
MAX_COORD = 100_000  # px: far beyond any camera, small enough to catch unit mistakes


def _polygon(points: list[Point], what: str, stored: bool = False) -> list[Point]:
    """A polygon's checks; ``stored``: read back from the store, where a zone saved before
    a check existed must still load (the pipeline reads every camera's settings)."""
    if len(points) < 3:
        raise ValueError(f"{what} needs at least 3 points, got {len(points)}")
    if len(points) > 200:
        raise ValueError(f"{what} has {len(points)} points; at most 200")
    for x, y in points:
        if not (0 <= x <= MAX_COORD and 0 <= y <= MAX_COORD):
            raise ValueError(f"{what}: point ({x}, {y}) is outside 0..{MAX_COORD} px")
    # repeated or collinear points (or crossing edges whose parts cancel) enclose
    # nothing: such a zone would count nobody and exclude nothing, without a word
    import cv2  # here, not at import: settings load without OpenCV (the accept process)

    if not stored and cv2.contourArea(np.asarray(points, np.float32).reshape(-1, 1, 2)) <= 0:
        raise ValueError(f"{what} encloses no area (its points repeat, lie on one line "
                         "or its edges cross)")
    return points


STORED = {"stored": True}  # validation context of settings read back from the store


def from_store(info: ValidationInfo) -> bool:
    """Validating settings read back from the store (``STORED`` context): checks added
    since they were saved must not stop them loading."""
    return bool(info.context and info.context.get("stored"))


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
    def _count_zone(cls, v: list[Point] | None, info: ValidationInfo) -> list[Point] | None:
        return None if v is None else _polygon(v, "count_zone", from_store(info))

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: list[list[Point]], info: ValidationInfo) -> list[list[Point]]:
        return [_polygon(p, f"exclude[{i}]", from_store(info)) for i, p in enumerate(v)]

    @field_validator("named")
    @classmethod
    def _named(cls, v: dict[str, list[Point]], info: ValidationInfo) -> dict[str, list[Point]]:
        for name in v:
            if not 0 < len(name) <= 64 or not name.strip():
                raise ValueError(f"zone name {name!r} must be 1-64 characters")
        return {k: _polygon(p, f"named zone {k!r}", from_store(info)) for k, p in v.items()}

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
    import cv2

    return cv2.pointPolygonTest(_contour(polygon), (float(x), float(y)), False) >= 0


Level = Literal["green", "amber", "red", "no_data"]


class LocationOccupancy(BaseModel):
    """A location's capacity and the levels its sign shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(..., ge=1, le=1_000_000, description="Most people allowed inside.")
    amber_pct: float = Field(70.0, gt=0, le=1000, description="Amber from this % of capacity.")
    red_pct: float = Field(90.0, gt=0, le=1000,
                           description="Red (the sign says wait) from this % of capacity.")
    stale_after_s: int = Field(120, ge=5, le=86_400, description="A camera whose newest count "
                               "is older than this is not reporting; with none reporting the "
                               "sign says 'no data'.")

    @model_validator(mode="after")
    def _levels(self) -> LocationOccupancy:
        if self.amber_pct >= self.red_pct:
            raise ValueError(f"amber_pct ({self.amber_pct}) must be below red_pct "
                             f"({self.red_pct})")
        return self

    def level(self, pct: float) -> Level:
        """``pct`` is 100 * count / capacity in floating point, which can land a hair under
        a level it reaches exactly (18.9 of 21 people: 89.99999999999999 %, shown as
        90.0): compared at a precision far finer than any count's."""
        pct = round(pct, 6)
        if pct >= self.red_pct:
            return "red"
        return "amber" if pct >= self.amber_pct else "green"
