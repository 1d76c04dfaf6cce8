from __future__ import annotations

from datetime import timedelta

import pytest

from revisit.report.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("30m", timedelta(minutes=30)),
        ("5s", timedelta(seconds=5)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2d", timedelta(days=2)),
        (" 45 min ", timedelta(minutes=45)),
        ("0s", timedelta(0)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "abc", "5x", "m", "-5m", "30m junk", "1h-5m"])
def test_rejects_with_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_bare_number_asks_for_unit() -> None:
    with pytest.raises(ValueError, match="no unit"):
        parse_duration("30")


def test_format_roundtrip() -> None:
    for text in ("0", "30m", "5s", "1h30m", "2d"):
        assert format_duration(parse_duration(text)) == text
