"""The one timestamp parser every input shares."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from revisit.ingest.timestamps import TimestampError, TimeWindow, parse_ts


@pytest.mark.parametrize(("text", "want"), [
    ("2024-05-02T10:00:00Z", datetime(2024, 5, 2, 10, tzinfo=UTC)),
    ("2024-05-02T10:00:00z", datetime(2024, 5, 2, 10, tzinfo=UTC)),  # RFC 3339 allows it
    ("2024-05-02T10:00:00+05:45", datetime(2024, 5, 2, 4, 15, tzinfo=UTC)),
    ("2024-05-02T10:00:00+14:00", datetime(2024, 5, 1, 20, tzinfo=UTC)),
    ("2024-05-02T10:00:00-12:00", datetime(2024, 5, 2, 22, tzinfo=UTC)),
])
def test_offsets_in_use_are_read(text: str, want: datetime) -> None:
    assert parse_ts(text) == want


@pytest.mark.parametrize(("text", "words"), [
    ("2024-05-02T10:00:00", "no UTC offset"),
    ("2024-05-02T10:00:00+23:59", "offsets run from"),
    ("2024-05-02T10:00:00-15:00", "offsets run from"),
    ("2024-05-02T10:00:00-13:00", "offsets run from"),
    ("2024-05-02 10:00", "no UTC offset"),
    ("yesterday", "not an ISO 8601"),
])
def test_a_timestamp_without_a_real_offset_is_refused(text: str, words: str) -> None:
    with pytest.raises(TimestampError, match=words):
        parse_ts(text)


@pytest.mark.parametrize("text", ["2024-05-02T10:00:00+14:01", "2024-05-02T10:00:00+15:00",
                                  "2024-05-02T10:00:00-12:01"])
def test_offsets_just_past_the_ones_in_use_are_refused(text: str) -> None:
    with pytest.raises(TimestampError, match="offsets run from"):
        parse_ts(text)


NOW = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)


def test_the_window_starts_at_utc_midnight_of_earliest_inclusive() -> None:
    w = TimeWindow(earliest=date(2020, 1, 1), future=timedelta(hours=2))
    assert w.reason(datetime(2020, 1, 1, 0, 0, tzinfo=UTC), NOW) is None  # the first instant
    assert w.reason(datetime(2020, 1, 1, 0, 0, 1, tzinfo=UTC), NOW) is None
    why = w.reason(datetime(2019, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), NOW)
    assert why is not None and "before 2020-01-01" in why
    # a local time on the earliest day that is still the day before in UTC is refused
    assert w.reason(parse_ts("2020-01-01T00:30:00+01:00"), NOW) is not None


def test_the_window_ends_future_after_now_inclusive() -> None:
    w = TimeWindow(earliest=date(2020, 1, 1), future=timedelta(hours=2))
    assert w.reason(NOW, NOW) is None
    assert w.reason(NOW + timedelta(hours=1), NOW) is None  # inside the allowance
    assert w.reason(NOW + timedelta(hours=2), NOW) is None  # exactly at the end
    why = w.reason(NOW + timedelta(hours=2, microseconds=1), NOW)
    assert why is not None and "more than 2 h in the future" in why


def test_check_refuses_with_the_reason_and_passes_good_timestamps() -> None:
    w = TimeWindow()  # 2000-01-01 to now + 1 day
    ts = datetime.now(UTC) - timedelta(days=1)
    assert w.check(ts) is ts
    with pytest.raises(TimestampError, match="before 2000-01-01"):
        w.check(datetime(1970, 1, 1, tzinfo=UTC))
    with pytest.raises(TimestampError, match="in the future"):
        w.check(datetime.now(UTC) + timedelta(days=2))


@pytest.mark.parametrize("text", [
    "2024-05-02T10:00:00\x00+00:00",  # fromisoformat takes a NUL or a tab here
    "2024-05-02T10:00:00\t+00:00",
    "2024-05-02T10:00:00." + "1" * 60 + "Z",  # and any number of fraction digits
])
def test_control_characters_and_overlong_text_are_refused(text: str) -> None:
    with pytest.raises(TimestampError, match="not an ISO 8601 timestamp") as e:
        parse_ts(text)
    assert len(str(e.value)) < 120  # the message quotes at most 64 characters of it
