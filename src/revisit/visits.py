"""The visit rule, stated once: the report (its default gap, and the rollup kept for it),
consolidation, the simulator's ground truth and the evaluation all import it.

A visit is a run of sightings of one visitor at one location with no gap longer than the
visit gap; a gap exactly equal to it continues the visit, and a gap of zero makes every
sighting a visit. The report computes the same in SQL (``revisit.store.report_sql``); tests hold
the two to the same numbers. Ground truth counts visits from the snapshots a person really
appears in, not from the plan, so a shopper who steps out for ten minutes and comes back is
one visit, as the report would count it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

DEFAULT_VISIT_GAP = timedelta(minutes=30)


def count_visits(times: Iterable[datetime], gap: timedelta = DEFAULT_VISIT_GAP) -> int:
    """Number of visits in one visitor's sighting times at one location.

    A new visit starts when the time since the previous sighting is longer than ``gap``;
    a gap of zero makes every sighting a visit (as in the report).
    """
    ordered = sorted(times)
    if not ordered:
        return 0
    if gap <= timedelta(0):
        return len(ordered)
    visits = 1
    for prev, cur in itertools.pairwise(ordered):
        if cur - prev > gap:
            visits += 1
    return visits


def visits_per_location(
    sightings: Iterable[tuple[str, datetime]], gap: timedelta = DEFAULT_VISIT_GAP
) -> dict[str, int]:
    """``{location_id: visits}`` from one visitor's ``(location_id, ts)`` sightings."""
    by_loc: dict[str, list[datetime]] = defaultdict(list)
    for loc, ts in sightings:
        by_loc[loc].append(ts)
    return {loc: count_visits(ts, gap) for loc, ts in sorted(by_loc.items())}
