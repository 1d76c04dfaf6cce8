"""What a report asks for and what it answers: shared by every store backend and format."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


# entries of the zone database that name no place: the server's own zone, whatever it is,
# and an offset of zero by design
_NO_PLACE = frozenset({"localtime", "Factory", "posixrules"})
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu"})


def check_timezone(tz: str) -> str:
    """The IANA zone name ``tz`` as given, or ValueError naming what is wrong with it."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {tz!r} (use an IANA name like Europe/Berlin)") from None
    if tz in _NO_PLACE:
        raise ValueError(f"timezone {tz!r} names no place (use an IANA name like "
                         "Europe/Berlin)")
    return tz


@lru_cache(maxsize=256)
def _offsets(zone: ZoneInfo, t0: datetime, t1: datetime) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The zone's UTC offsets in [t0, t1): (instants where an offset begins, in microseconds
    since the epoch; the offsets, one more than the instants). Zones change their offset a
    few times a year at most, never twice within an hour: hourly samples find every
    change, bisection its second."""
    def off(ts: int) -> int:
        return int(datetime.fromtimestamp(ts, UTC).astimezone(zone).utcoffset()  # type: ignore[union-attr]
                   .total_seconds())

    lo, hi = int(t0.timestamp()), int(t1.timestamp())
    changes: list[int] = []
    offsets = [off(lo)]
    prev = lo
    for ts in [*range(lo + 3600, hi, 3600), hi]:
        if off(ts) != offsets[-1]:
            a, b = prev, ts  # off(a) is the old offset, off(b) the new one
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if off(mid) == offsets[-1] else (a, mid)
            changes.append(b * 1_000_000)
            offsets.append(off(b))
        prev = ts
    return tuple(changes), tuple(o * 1_000_000 for o in offsets)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """A time range (whole days, inclusive at both ends) and a camera/location filter.

    Days (their boundaries, and the days and hours a report groups by) are those of
    ``timezone``, an IANA zone, UTC by default. ``visit_gap`` of zero makes every sighting
    a visit.
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
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        check_days(self.start, self.end)
        if self.visit_gap < timedelta(0):
            raise ValueError("visit gap must not be negative")
        check_timezone(self.timezone)
        if self.timezone in UTC_NAMES:
            object.__setattr__(self, "timezone", "UTC")

    @property
    def in_utc(self) -> bool:
        return self.timezone == "UTC"

    def _midnight(self, day: date) -> datetime:
        # a midnight the clocks skip (a change of offset at 00:00) is read with the offset
        # before it: the day's first instant
        return datetime.combine(day, time.min, tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)

    @property
    def ts_from(self) -> datetime:
        """The first instant of the ``start`` day in the query's timezone."""
        return self._midnight(self.start)

    @property
    def ts_to(self) -> datetime:
        """Exclusive upper bound: midnight after the ``end`` day."""
        return self._midnight(self.end + timedelta(days=1))

    @property
    def utc_offsets(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The timezone's offsets over the period (see :func:`_offsets`), in microseconds."""
        if self.in_utc:
            return (), (0,)
        return _offsets(ZoneInfo(self.timezone), self.ts_from, self.ts_to)

    def local_us(self, us: int, offsets: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
                 ) -> int:
        """An instant of the period (microseconds since the epoch) as local wall-clock
        microseconds: what an hour or a day of the report is taken from."""
        changes, offs = offsets or self.utc_offsets
        return us + offs[bisect_right(changes, us)]

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
    timezone: str = "UTC"  # whose days ``start`` and ``end`` are

    def __post_init__(self) -> None:
        check_days(self.start, self.end)
        check_timezone(self.timezone)


# The columns of a sightings export, in order (CSV header, JSON keys).
SIGHTING_COLUMNS = (
    "face_id", "face_image_id", "image_id", "camera_id", "location_id", "ts",
    "bbox_x", "bbox_y", "bbox_w", "bbox_h", "quality", "match_score",
)
