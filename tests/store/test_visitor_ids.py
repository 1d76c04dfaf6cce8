from __future__ import annotations

import pytest

from revisit.store.visitor_ids import (
    format_visitor_id,
    parse_visitor_number,
    visitor_number_or_zero,
)


def test_format_and_parse() -> None:
    assert format_visitor_id(1) == "V-000001"
    assert format_visitor_id(0x1A7) == "V-0001A7"
    assert format_visitor_id(0x1234567) == "V-1234567"  # grows past 6 digits
    for n in (1, 255, 0xFFFFFF, 0x1000000):
        assert parse_visitor_number(format_visitor_id(n)) == n


@pytest.mark.parametrize("bad", ["", "V-", "V-1A7", "v-0001a7", "X-000001", "V-00001G"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_visitor_number(bad)
    assert visitor_number_or_zero(bad) == 0


def test_format_rejects_zero() -> None:
    with pytest.raises(ValueError):
        format_visitor_id(0)
