"""The one timestamp parser every input shares."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from revisit.ingest.timestamps import TimestampError, parse_ts


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
