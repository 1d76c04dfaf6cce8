"""The visit rule shared by the truth and the evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from revisit.visits import count_visits, visits_per_location

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_gap_longer_than_the_visit_gap_starts_a_new_visit() -> None:
    assert count_visits([]) == 0
    assert count_visits([at(0)]) == 1
    assert count_visits([at(0), at(30)]) == 1  # exactly the gap: same visit
    assert count_visits([at(0), at(30.5)]) == 2
    # unordered input; 0-20-45 chains into one visit, 120 is a second
    assert count_visits([at(120), at(20), at(0), at(45)]) == 2
    assert count_visits([at(0), at(10)], gap=timedelta(0)) == 2


def test_visits_per_location_separates_locations() -> None:
    got = visits_per_location([("S02", at(0)), ("S01", at(1)), ("S01", at(200)), ("S02", at(5))])
    assert got == {"S01": 2, "S02": 1}


def test_unsorted_input_is_sessionised_in_time_order() -> None:
    # 0, 50, 100 minutes: every step is longer than 30 -> three visits, in whatever order
    # the sightings arrive (taken as given, 0 -> 100 -> 50 would look like two)
    assert count_visits([at(0), at(100), at(50)]) == 3


def test_gap_zero_counts_two_sightings_at_one_instant_as_two_visits() -> None:
    # as in the report (tests/report/test_visits.py: gap 0, [0, 0, 1, 2] -> 4 visits)
    assert count_visits([at(0), at(0), at(1), at(2)], gap=timedelta(0)) == 4


def test_visits_per_location_uses_the_gap_it_is_given() -> None:
    sightings = [("S01", at(0)), ("S01", at(45)), ("S02", at(0)), ("S02", at(100))]
    assert visits_per_location(sightings) == {"S01": 2, "S02": 2}  # default 30 min
    assert visits_per_location(sightings, gap=timedelta(minutes=60)) == {"S01": 1, "S02": 2}
