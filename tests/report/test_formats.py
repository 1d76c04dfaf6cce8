"""Report and sightings writers: parseable, streamed, complete."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from revisit.report import formats
from revisit.report.query import ReportHeader, ReportRow

HEADER = ReportHeader(
    period="2024-03-01 to 2024-03-31", camera_group="locations 101,203",
    unique_visitors=2, total_visits=5, total_sightings=9,
)
ROWS = [
    ReportRow("V-000001", 3, 2, {"101": 2, "203": 1},
              datetime(2024, 3, 1, 9, tzinfo=UTC), datetime(2024, 3, 2, 17, 5, tzinfo=UTC), 6),
    ReportRow("V-00000A", 2, 1, {"101": 2},
              datetime(2024, 3, 3, 9, tzinfo=UTC), datetime(2024, 3, 3, 12, tzinfo=UTC), 3),
]


def test_json_is_valid_and_complete() -> None:
    out = io.StringIO()
    assert formats.write_report("json", HEADER, iter(ROWS), out) == 2
    doc = json.loads(out.getvalue())
    assert doc["header"]["unique_visitors"] == 2
    assert doc["header"]["period"] == "2024-03-01 to 2024-03-31"
    assert [v["visitor_id"] for v in doc["visitors"]] == ["V-000001", "V-00000A"]
    assert doc["visitors"][0]["visits_per_location"] == {"101": 2, "203": 1}
    assert doc["visitors"][0]["first_seen"] == "2024-03-01T09:00:00Z"


def test_json_empty_report_is_valid() -> None:
    out = io.StringIO()
    formats.write_json(iter([]), out, HEADER)
    assert json.loads(out.getvalue())["visitors"] == []


def test_json_streams_row_by_row() -> None:
    """The writer must not pull the whole iterator before writing."""
    out = io.StringIO()
    pulled: list[int] = []

    def gen() -> Iterator[ReportRow]:
        for i in range(1, 4):
            pulled.append(i)
            # everything pulled so far is already written, except the current row
            assert out.getvalue().count('"visitor_id"') == i - 1
            yield ReportRow(f"V-{i:06X}", 1, 1, {"1": 1})

    formats.write_json(gen(), out, HEADER)
    assert pulled == [1, 2, 3]
    assert len(json.loads(out.getvalue())["visitors"]) == 3


def test_csv_parses() -> None:
    out = io.StringIO()
    formats.write_report("csv", HEADER, iter(ROWS), out)
    text = out.getvalue()
    assert text.splitlines()[0] == ",".join(formats.REPORT_CSV_COLUMNS)
    assert text.splitlines()[0] == ("Visitor ID,Total Appearances,Locations Visited,"
                                    "Visit Frequency per Location,First Seen (UTC),"
                                    "Last Seen (UTC),Sightings")  # the specification's
    recs = list(formats.read_report_csv(io.StringIO(text)))
    assert recs[0]["Visitor ID"] == "V-000001"
    assert recs[0]["Locations Visited"] == "101, 203"
    assert recs[0]["Visit Frequency per Location"] == "101: 2, 203: 1"
    assert recs[0]["Total Appearances"] == "3"
    assert recs[0]["Last Seen (UTC)"] == "2024-03-02T17:05:00Z"
    assert len(recs) == 2


def test_stores_appear_by_name_where_they_have_one() -> None:
    names = {"101": "Store #101", "203": "Store #203"}
    out = io.StringIO()
    formats.write_report("csv", HEADER, iter(ROWS), out, names=names)
    rec = next(formats.read_report_csv(io.StringIO(out.getvalue())))
    assert rec["Locations Visited"] == "Store #101, Store #203"
    assert rec["Visit Frequency per Location"] == "Store #101: 2, Store #203: 1"
    out = io.StringIO()
    formats.write_report("json", HEADER, iter(ROWS), out, names={"101": "Store #101"})
    v = json.loads(out.getvalue())["visitors"][0]
    assert v["visits_per_location"] == {"101": 2, "203": 1}  # ids stay the keys
    assert v["locations"] == [{"location_id": "101", "name": "Store #101", "visits": 2},
                              {"location_id": "203", "name": "203", "visits": 1}]
    out = io.StringIO()
    formats.write_report("table", HEADER, iter(ROWS), out, names=names)
    assert "Store #101: 2, Store #203: 1" in out.getvalue()


def test_csv_header_comments_option() -> None:
    out = io.StringIO()
    formats.write_report("csv", HEADER, iter(ROWS), out, header_comments=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "# time period: 2024-03-01 to 2024-03-31"
    assert "# total unique visitors: 2" in lines
    assert len(list(formats.read_report_csv(io.StringIO(out.getvalue())))) == 2


def test_table_has_header_block_and_aligned_columns() -> None:
    out = io.StringIO()
    formats.write_report("table", HEADER, iter(ROWS), out)
    lines = out.getvalue().splitlines()
    assert "Time Period:           2024-03-01 to 2024-03-31" in lines
    assert "Camera Group:          locations 101,203" in lines
    assert "Total Unique Visitors: 2" in lines
    head = next(i for i, ln in enumerate(lines) if ln.startswith("Visitor ID"))
    body = lines[head + 2:]
    assert [ln.split()[0] for ln in body] == ["V-000001", "V-00000A"]
    col = lines[head].index("Visit Frequency")
    assert body[0][col:].startswith("101: 2, 203: 1")
    assert body[1][col:].startswith("101: 2")


def test_table_empty() -> None:
    out = io.StringIO()
    assert formats.write_table(iter([]), out, HEADER) == 0
    assert "no visitors" in out.getvalue()


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="table, csv, json"):
        formats.write_report("xml", HEADER, iter(ROWS), io.StringIO())
    with pytest.raises(ValueError, match="csv, jsonl"):
        formats.write_sightings("xml", iter([]), io.StringIO())


SIGHTINGS = [
    {"face_id": "V-000001", "face_image_id": "F-1", "image_id": "I-1", "camera_id": "c1",
     "location_id": "101", "ts": "2024-03-01T09:00:00Z", "bbox_x": 1, "bbox_y": 2,
     "bbox_w": 30, "bbox_h": 40, "quality": 0.9, "match_score": 0.71},
]


def test_sightings_csv_and_jsonl() -> None:
    import csv

    out = io.StringIO()
    assert formats.write_sightings("csv", iter(SIGHTINGS), out) == 1
    rec = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert rec["face_image_id"] == "F-1" and rec["bbox_h"] == "40"
    out = io.StringIO()
    formats.write_sightings("jsonl", iter(SIGHTINGS * 2), out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == SIGHTINGS[0]


def test_end_to_end_from_store(store) -> None:
    from datetime import date, timedelta

    from revisit.report.query import ReportQuery, SightingQuery
    from revisit.store.testing import at, batch, sighting

    store.write(batch([sighting("V-000001", at(i * 60), "101") for i in range(3)]
                      + [sighting("V-000002", at(5), "203")]))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 1), visit_gap=timedelta(minutes=30))
    out = io.StringIO()
    formats.write_report("json", store.report_header(q), store.report_rows(q), out)
    doc = json.loads(out.getvalue())
    assert doc["header"]["total_visits"] == 4
    assert doc["visitors"][0] == {
        "visitor_id": "V-000001", "total_appearances": 3, "locations_visited": 1,
        "visits_per_location": {"101": 3},
        "locations": [{"location_id": "101", "name": "101", "visits": 3}],
        "first_seen": "2024-03-01T09:00:00Z",
        "last_seen": "2024-03-01T11:00:00Z", "sightings": 3,
    }
    out = io.StringIO()
    formats.write_sightings("jsonl", store.sightings(SightingQuery()), out)
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["face_id"] == "V-000001" and first["ts"] == "2024-03-01T09:00:00Z"


def test_table_right_aligns_counts_and_shows_times_in_utc() -> None:
    from datetime import timedelta, timezone

    plus2 = timezone(timedelta(hours=2))
    row = ReportRow("V-000001", 3, 1, {"101": 3}, datetime(2024, 3, 1, 11, 0, tzinfo=plus2),
                    datetime(2024, 3, 1, 12, 30, tzinfo=plus2), 12)
    out = io.StringIO()
    formats.write_table(iter([row]), out)
    head, _, body = out.getvalue().splitlines()
    # the count sits under the right end of its heading: "Total Appearances" is 17 wide
    end = head.index("Total Appearances") + len("Total Appearances")
    assert body[end - 1] == "3" and body[end - 2] == " "
    assert body.endswith("12") and len(body) == len(head)  # Sightings, right-aligned
    # the column says UTC: 11:00+02:00 is 09:00 UTC
    assert "2024-03-01 09:00:00  2024-03-01 10:30:00" in body


def test_flows_csv_names_both_stores() -> None:
    flows = {
        "names": {"101": "High St", "203": "Mall"},
        "affinity": [{"from": "101", "to": "203", "visitors": 4, "share": 0.5}],
        "transitions": [{"from": "203", "to": "101", "visits": 3}],
    }
    out = io.StringIO()
    assert formats.write_flows_csv(flows, out) == 2
    import csv as _csv

    got = list(_csv.reader(io.StringIO(out.getvalue())))
    assert got[1] == ["affinity", "101", "High St", "203", "Mall", "4", "0.5"]
    assert got[2] == ["transition", "203", "Mall", "101", "High St", "3", ""]
