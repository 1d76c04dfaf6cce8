"""A location's occupancy from its cameras' counts: the overlap rule, capacity, levels and
the door sign's state.

The overlap rule: cameras of one location that see the same area share an
``overlap_group``; a group counts as one view and gives the *maximum* of its cameras'
counts. Groups (and cameras without a group, each its own) see disjoint areas and *add
up*. Where two cameras overlap only partly, give each a counting zone so every area is
counted by exactly one camera; they are then disjoint and add up. (docs/occupancy.md has
an example.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from revisit.config.occupancy import Level, LocationOccupancy


@dataclass(frozen=True, slots=True)
class CameraCount:
    """One camera's newest count of a zone ("" = its counting zone)."""

    camera_id: str
    group: str  # overlap group (the camera id when it has none)
    count: float
    ts: datetime


def combine(counts: Iterable[CameraCount]) -> float:
    """The overlap rule: the maximum within an overlap group, the sum over groups."""
    best: dict[str, float] = {}
    for c in counts:
        best[c.group] = max(best.get(c.group, 0.0), c.count)
    return sum(best.values())


@dataclass(frozen=True, slots=True)
class Occupancy:
    """What the sign and the API show for a location now."""

    location_id: str
    count: float | None  # None: no camera reporting
    capacity: int
    pct: float | None
    level: Level
    sign: Literal["enter", "wait", "no_data"]
    as_of: datetime | None  # the newest count's time
    cameras: int  # counting cameras of the location
    reporting: list[str]  # those whose newest count is fresh
    zones: dict[str, float]  # named zones' people now

    def as_dict(self) -> dict[str, object]:
        return {
            "location_id": self.location_id,
            "count": None if self.count is None else round(self.count, 1),
            "people": None if self.count is None else round(self.count),
            "capacity": self.capacity,
            "occupancy_pct": None if self.pct is None else round(self.pct, 1),
            "level": self.level, "sign": self.sign,
            "as_of": None if self.as_of is None else self.as_of.isoformat().replace("+00:00", "Z"),
            "cameras": self.cameras, "reporting": self.reporting,
            "complete": bool(self.cameras) and len(self.reporting) == self.cameras,
            "zones": {k: round(v, 1) for k, v in sorted(self.zones.items())},
        }


def occupancy(location_id: str, cfg: LocationOccupancy, cameras: int,
              newest: list[CameraCount], zones: dict[str, dict[str, float]],
              now: datetime) -> Occupancy:
    """``newest``: each counting camera's newest count of its counting zone (any age);
    ``zones``: per camera, its named zones' people in that frame. Only cameras whose
    newest count is younger than ``cfg.stale_after_s`` count, for the zones too."""
    fresh = [c for c in newest if (now - c.ts).total_seconds() <= cfg.stale_after_s]
    named: dict[str, float] = {}
    for c in fresh:
        for zone, people in zones.get(c.camera_id, {}).items():
            named[zone] = named.get(zone, 0.0) + people
    if not fresh:
        return Occupancy(location_id, None, cfg.capacity, None, "no_data", "no_data",
                         max((c.ts for c in newest), default=None), cameras, [], {})
    count = combine(fresh)
    # at a precision far finer than any count's: floating point lands a hair off a % it
    # reaches exactly (18.9 of 21: 89.99999999999999; 4.9 of 7: 70.00000000000001), which
    # would move the level and the rules' "above" across the line
    pct = round(100.0 * count / cfg.capacity, 6)
    level = cfg.level(pct)
    return Occupancy(location_id, count, cfg.capacity, pct, level,
                     "wait" if level == "red" else "enter", max(c.ts for c in fresh), cameras,
                     sorted(c.camera_id for c in fresh), named)
