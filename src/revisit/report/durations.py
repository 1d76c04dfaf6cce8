"""Durations as people type them on a command line: ``30m``, ``5s``, ``1h30m``, ``0``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)", re.IGNORECASE)


MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo, and overflows SQL


def parse_duration(text: str) -> timedelta:
    """Parse ``30m``, ``5s``, ``90s``, ``1h30m``, ``1.5h``, ``250ms`` or a bare ``0``.

    A bare number other than 0 is refused: ``30`` could mean seconds or minutes, and a
    silent guess would change every visit count.
    """
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError("empty duration (expected e.g. 30m, 5s, 1h30m or 0)")
    if re.fullmatch(r"0+(\.0+)?", s):
        return timedelta(0)
    if re.fullmatch(r"\d+(\.\d+)?", s):
        raise ValueError(f"duration {text!r} has no unit (write e.g. {s}s or {s}m)")
    pos = 0
    total = timedelta(0)
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        try:
            total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        except OverflowError:
            total = MAX_DURATION * 2
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(
            f"cannot read duration {text!r} (expected e.g. 30m, 5s, 1h30m, 250ms or 0; "
            "units: ms, s, m, h, d)"
        )
    if total > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days} days")
    return total


def format_duration(d: timedelta) -> str:
    """Inverse of :func:`parse_duration` for whole seconds: ``timedelta(minutes=30)`` -> ``30m``."""
    secs = int(d.total_seconds())
    if secs == 0:
        return "0"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(out)
