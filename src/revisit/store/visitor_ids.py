"""Visitor ids: ``V-`` followed by an upper-case hex counter, zero-padded to 6 digits.

A counter (not a hash) keeps ids short and readable in reports, and makes "the next id"
a single number per tenant that the store remembers even after visitors are erased, so
an erased id is never handed out again.
"""

from __future__ import annotations

import re

PREFIX = "V-"
_ID_RE = re.compile(r"^V-([0-9A-F]{6,})$")


def format_visitor_id(n: int) -> str:
    """``12345`` -> ``V-003039``. Numbers start at 1."""
    if n < 1:
        raise ValueError(f"visitor number must be >= 1, got {n}")
    return f"{PREFIX}{n:06X}"


def parse_visitor_number(visitor_id: str) -> int:
    """``V-003039`` -> ``12345``; ValueError for anything that is not a visitor id."""
    m = _ID_RE.match(visitor_id)
    if m is None:
        raise ValueError(f"{visitor_id!r} is not a visitor id (expected V- and >= 6 hex digits)")
    return int(m.group(1), 16)


def visitor_number_or_zero(visitor_id: str) -> int:
    """Like :func:`parse_visitor_number` but 0 for foreign ids (imported data, tests)."""
    try:
        return parse_visitor_number(visitor_id)
    except ValueError:
        return 0
