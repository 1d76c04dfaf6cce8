"""Snapshot timestamps: one strict parser and one sane window for every input.

A timestamp is ISO 8601 with an explicit offset (``Z`` or ``+01:00``), printable, and
inside the window ``[ingest.earliest, now + ingest.max_future_s]``: a camera clock reset to
1970 or a typo'd year is refused at the door (per frame, with a reason) instead of
failing later in the store or silently polluting reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


class TimestampError(ValueError):
    """A timestamp that is malformed, has no offset, or lies outside the window."""


# UTC offsets in use run from -12:00 to +14:00; one past them is a typo, not a place
OFFSETS = (timedelta(hours=-12), timedelta(hours=14))


def parse_ts(text: str) -> datetime:
    """ISO 8601 with an explicit offset (``Z`` or ``z``, RFC 3339 allows both); the result
    is timezone-aware."""
    if not text.isprintable() or len(text) > 64:
        raise TimestampError(f"ts {text[:64]!r} is not an ISO 8601 timestamp")
    try:
        ts = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise TimestampError(f"ts {text!r} is not an ISO 8601 timestamp") from None
    offset = ts.utcoffset()
    if ts.tzinfo is None or offset is None:
        raise TimestampError(f"ts {text!r} has no UTC offset (add Z or +HH:MM)")
    if not OFFSETS[0] <= offset <= OFFSETS[1]:
        raise TimestampError(f"ts {text!r}: UTC offsets run from -12:00 to +14:00")
    try:
        ts.astimezone(UTC)
    except OverflowError:
        raise TimestampError(f"ts {text!r} is outside the representable range") from None
    return ts


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Timestamps a snapshot may carry: from ``earliest`` (UTC midnight) to ``future``
    after now."""

    earliest: date = date(2000, 1, 1)
    future: timedelta = timedelta(days=1)

    def reason(self, ts: datetime, now: datetime | None = None) -> str | None:
        """Why ``ts`` is refused (None: it is fine)."""
        start = datetime.combine(self.earliest, time.min, UTC)
        end = (now or datetime.now(UTC)) + self.future
        if ts < start:
            return f"ts {ts.isoformat()} is before {start.date().isoformat()} (ingest.earliest)"
        if ts > end:
            ahead = f"{self.future.total_seconds() / 3600:g} h"
            return (f"ts {ts.isoformat()} is more than {ahead} in the future "
                    "(ingest.max_future_s; is the camera clock right?)")
        return None

    def check(self, ts: datetime) -> datetime:
        """``ts``, or :class:`TimestampError` naming why it is refused."""
        why = self.reason(ts)
        if why is not None:
            raise TimestampError(why)
        return ts
