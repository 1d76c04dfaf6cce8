"""What a report asks for and what it answers: shared by every store backend and format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from revisit.records import DEFAULT_TENANT
from revisit.visits import DEFAULT_VISIT_GAP

# Report days a query may name: no snapshot is older (ingest.earliest >= 1970) and none
# is stored far in the future; wider dates only overflow date arithmetic.
EARLIEST_DAY = date(1970, 1, 1)
LATEST_DAY = date(2199, 12, 31)


def check_days(start: date | None, end: date | None) -> None:
    """Raise ValueError naming a day outside EARLIEST_DAY..LATEST_DAY (it would overflow the
    date arithmetic) or an end before the start (an empty answer that looks like "nobody")."""
    for name, day in (("from", start), ("to", end)):
        if day is not None and not EARLIEST_DAY <= day <= LATEST_DAY:
            raise ValueError(f"{name} {day} is outside {EARLIEST_DAY} to {LATEST_DAY}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"to {end} is before from {start}")


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """A time range (whole days, inclusive at both ends) and a camera/location filter.

    Day boundaries are taken in UTC. ``visit_gap`` of zero makes every sighting a visit.
    """

    start: date
    end: date
    tenant: str = DEFAULT_TENANT
    locations: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    visit_gap: timedelta = DEFAULT_VISIT_GAP
    camera_group: str = ""  # name shown in the header when the cameras came from a group
    # visitor ids left out (staff: revisit.known), filled in by the store, not by callers
    excluded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_days(self.start, self.end)
        if self.visit_gap < timedelta(0):
            raise ValueError("visit gap must not be negative")

    @property
    def ts_from(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def ts_to(self) -> datetime:
        """Exclusive upper bound: midnight after the ``end`` day."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)

    def describe_filter(self) -> str:
        parts = []
        if self.camera_group:
            parts.append(f"group {self.camera_group}")
        if self.locations:
            parts.append("locations " + ",".join(self.locations))
        if self.cameras:
            parts.append("cameras " + ",".join(self.cameras))
        return "; ".join(parts) or "all cameras"


@dataclass(frozen=True, slots=True)
class ReportHeader:
    period: str
    camera_group: str
    unique_visitors: int
    total_visits: int
    total_sightings: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    visitor_id: str
    total_appearances: int  # visits summed over locations
    locations_visited: int
    visits_per_location: dict[str, int] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sightings: int = 0


@dataclass(frozen=True, slots=True)
class SightingQuery:
    start: date | None = None
    end: date | None = None
    tenant: str = DEFAULT_TENANT
    locations: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_days(self.start, self.end)


# The columns of a sightings export, in order (CSV header, JSON keys).
SIGHTING_COLUMNS = (
    "face_id", "face_image_id", "image_id", "camera_id", "location_id", "ts",
    "bbox_x", "bbox_y", "bbox_w", "bbox_h", "quality", "match_score",
)
