"""Report and sightings writers. Every writer streams: it takes an iterator of rows and a
text stream and never holds more than a bounded number of rows, so a report with
millions of visitors writes in constant memory.

Formats (the specification's report: ``Visitor ID``, ``Total Appearances``, ``Locations
Visited``, ``Visit Frequency per Location``, then the extra columns; stores appear by the
name ``add-location --name`` gave them, else by id: ``names`` maps id -> name)
- ``table``: a header block (Time Period, Camera Group, Total Unique Visitors, totals),
  then aligned columns. Column widths come from the first :data:`TABLE_SAMPLE` rows; a
  longer later value just widens its line.
- ``csv``: one row per visitor, columns :data:`REPORT_CSV_COLUMNS`; timestamps ISO 8601 UTC
  (``...Z``); ``Locations Visited`` is ``Store #101, Store #203`` and ``Visit Frequency per
  Location`` ``Store #101: 8, Store #203: 7`` (quoted). Plain CSV by default;
  ``header_comments=True`` puts the header first as ``# key: value`` lines (for people,
  not for CSV parsers).
- ``json``: ``{"header": {...}, "visitors": [{...}, ...]}``, written row by row, stable
  snake_case keys with ids and names: ``locations_visited`` (count), ``visits_per_location``
  ``{"101": 8, "203": 7}`` in location-id order, and ``locations`` ``[{"location_id",
  "name", "visits"}]``.
- sightings: ``csv`` (columns :data:`revisit.report.query.SIGHTING_COLUMNS`) or ``jsonl``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TextIO

from revisit.records import iso_utc
from revisit.report.query import SIGHTING_COLUMNS, ReportHeader, ReportRow

REPORT_CSV_COLUMNS = (
    "Visitor ID", "Total Appearances", "Locations Visited", "Visit Frequency per Location",
    "First Seen (UTC)", "Last Seen (UTC)", "Sightings",
)
Names = Mapping[str, str]  # location id -> display name
TABLE_SAMPLE = 1000  # rows looked at to size the table's columns


def _short_utc(ts: datetime | None) -> str:
    return "" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def header_dict(header: ReportHeader | None) -> dict[str, Any] | None:
    return None if header is None else asdict(header)


def header_lines(header: ReportHeader) -> list[tuple[str, str]]:
    return [
        ("Time Period", header.period),
        ("Camera Group", header.camera_group),
        ("Total Unique Visitors", str(header.unique_visitors)),
        ("Total Visits", str(header.total_visits)),
        ("Total Sightings", str(header.total_sightings)),
    ]


def _name(names: Names | None, location_id: str) -> str:
    return (names or {}).get(location_id) or location_id


def locations_text(row: ReportRow, names: Names | None = None) -> str:
    """``Store #101, Store #203``: the stores of the visitor, in location-id order."""
    return ", ".join(_name(names, loc) for loc in row.visits_per_location)


def frequency_text(row: ReportRow, names: Names | None = None) -> str:
    """``Store #101: 8, Store #203: 7``."""
    return ", ".join(f"{_name(names, loc)}: {n}" for loc, n in row.visits_per_location.items())


# --- report -------------------------------------------------------------------------

_TABLE_COLUMNS = tuple(zip(REPORT_CSV_COLUMNS, "<><<<<>", strict=True))


def _table_cells(row: ReportRow, names: Names | None) -> tuple[str, ...]:
    return (
        row.visitor_id, str(row.total_appearances), locations_text(row, names),
        frequency_text(row, names), _short_utc(row.first_seen), _short_utc(row.last_seen),
        str(row.sightings),
    )


def write_table(rows: Iterable[ReportRow], out: TextIO, header: ReportHeader | None = None,
                names: Names | None = None) -> int:
    """Human-readable report; returns the number of visitor rows written."""
    if header is not None:
        out.write("Unique visitor report\n")
        for key, value in header_lines(header):
            out.write(f"{key + ':':<22} {value}\n")
        out.write("\n")
    it = iter(rows)
    sample = [_table_cells(r, names) for r in itertools.islice(it, TABLE_SAMPLE)]
    widths = [len(name) for name, _ in _TABLE_COLUMNS]
    for cells in sample:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        cols = zip(cells, _TABLE_COLUMNS, widths, strict=True)
        parts = [f"{c:{align}{w}}" for c, (_, align), w in cols]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line(tuple(name for name, _ in _TABLE_COLUMNS)))
    out.write("  ".join("-" * w for w in widths) + "\n")
    n = 0
    for cells in itertools.chain(sample, (_table_cells(r, names) for r in it)):
        out.write(line(cells))
        n += 1
    if n == 0:
        out.write("(no visitors in this period)\n")
    return n


def _csv_record(row: ReportRow, names: Names | None) -> list[Any]:
    return [
        row.visitor_id, row.total_appearances, locations_text(row, names),
        frequency_text(row, names), iso_utc(row.first_seen), iso_utc(row.last_seen),
        row.sightings,
    ]


def write_csv(
    rows: Iterable[ReportRow], out: TextIO, header: ReportHeader | None = None,
    header_comments: bool = False, names: Names | None = None,
) -> int:
    """Plain CSV (``header`` is ignored unless ``header_comments``)."""
    if header is not None and header_comments:
        for key, value in header_lines(header):
            out.write(f"# {key.lower()}: {value}\n")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(REPORT_CSV_COLUMNS)
    n = 0
    for row in rows:
        w.writerow(_csv_record(row, names))
        n += 1
    return n


def row_dict(row: ReportRow, names: Names | None = None) -> dict[str, Any]:
    return {
        "visitor_id": row.visitor_id,
        "total_appearances": row.total_appearances,
        "locations_visited": row.locations_visited,
        "visits_per_location": row.visits_per_location,
        "locations": [{"location_id": loc, "name": _name(names, loc), "visits": n}
                      for loc, n in row.visits_per_location.items()],
        "first_seen": iso_utc(row.first_seen) or None,
        "last_seen": iso_utc(row.last_seen) or None,
        "sightings": row.sightings,
    }


def write_json(rows: Iterable[ReportRow], out: TextIO, header: ReportHeader | None = None,
               names: Names | None = None) -> int:
    """One JSON object written incrementally: valid JSON however many rows stream."""
    out.write('{"header": ')
    out.write(json.dumps(header_dict(header)))
    out.write(', "visitors": [')
    n = 0
    for row in rows:
        out.write(",\n  " if n else "\n  ")
        out.write(json.dumps(row_dict(row, names)))
        n += 1
    out.write("\n]}\n" if n else "]}\n")
    return n


REPORT_FORMATS = ("table", "csv", "json")


def write_report(
    fmt: str, header: ReportHeader | None, rows: Iterable[ReportRow], out: TextIO,
    **options: Any,
) -> int:
    """Dispatch on ``fmt`` (table, csv, json); returns visitor rows written. ``options``:
    ``names`` (location id -> name), ``header_comments`` (csv)."""
    names = options.pop("names", None)
    if fmt == "table":
        return write_table(rows, out, header, names=names)
    if fmt == "csv":
        return write_csv(rows, out, header, names=names, **options)
    if fmt == "json":
        return write_json(rows, out, header, names=names)
    raise ValueError(f"unknown report format {fmt!r} (use {', '.join(REPORT_FORMATS)})")


def write_flows_csv(flows: dict[str, Any], out: TextIO) -> int:
    """Store affinity and transitions as one CSV: ``kind`` (affinity | transition),
    from/to ids and names, visitors or visits, share (affinity); then ``camera`` rows:
    from/to cameras, the store's id and name in the name columns."""
    names = flows.get("names", {})
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["kind", "from", "from_name", "to", "to_name", "count", "share"])
    n = 0
    for a in flows["affinity"]:
        w.writerow(["affinity", a["from"], _name(names, a["from"]), a["to"],
                    _name(names, a["to"]), a["visitors"], a["share"]])
        n += 1
    for t in flows["transitions"]:
        w.writerow(["transition", t["from"], _name(names, t["from"]), t["to"],
                    _name(names, t["to"]), t["visits"], ""])
        n += 1
    for store in flows.get("camera_paths", []):  # within a store: camera to camera
        for t in store["transitions"]:
            w.writerow(["camera", t["from"], store["location_id"], t["to"],
                        _name(names, store["location_id"]), t["visits"], ""])
            n += 1
    return n


# --- sightings ----------------------------------------------------------------------

SIGHTING_FORMATS = ("csv", "jsonl")


def write_sightings_csv(sightings: Iterable[dict[str, Any]], out: TextIO) -> int:
    w = csv.DictWriter(out, fieldnames=SIGHTING_COLUMNS, lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    n = 0
    for s in sightings:
        w.writerow(s)
        n += 1
    return n


def write_sightings_jsonl(sightings: Iterable[dict[str, Any]], out: TextIO) -> int:
    n = 0
    for s in sightings:
        out.write(json.dumps({k: s.get(k) for k in SIGHTING_COLUMNS}))
        out.write("\n")
        n += 1
    return n


def write_sightings(fmt: str, sightings: Iterable[dict[str, Any]], out: TextIO) -> int:
    if fmt == "csv":
        return write_sightings_csv(sightings, out)
    if fmt == "jsonl":
        return write_sightings_jsonl(sightings, out)
    raise ValueError(f"unknown sightings format {fmt!r} (use {', '.join(SIGHTING_FORMATS)})")


def write_analytics_csv(a: dict[str, Any], out: TextIO, names: Names | None = None) -> int:
    """``revisit analytics --format csv``: one long table, columns ``section``,
    ``location_id``, ``name``, ``key``, ``value`` (totals, dwell per store and for all
    stores, visits by hour and weekday, store affinity and transitions)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "location_id", "name", "key", "value"])
    rows: list[list[Any]] = [["totals", "", "", k, v] for k, v in a["totals"].items()]
    for d in [*a["dwell"]["locations"], {"location_id": "", **a["dwell"]["all"]}]:
        loc = d["location_id"]
        name = _name(names, loc) if loc else "All stores"
        rows += [["dwell", loc, name, "visits", d["visits"]],
                 ["dwell", loc, name, "median_s", d["median_s"]]]
        rows += [["dwell", loc, name, k, v] for k, v in d["buckets"].items()]
    rows += [["by_hour", "", "", h["hour"], h["visits"]] for h in a["by_hour"]]
    rows += [["by_weekday", "", "", d["day"], d["visits"]] for d in a["by_weekday"]]
    for x in a.get("flows", {}).get("affinity", []):
        rows.append(["affinity", x["from"], _name(names, x["from"]), f"also:{x['to']}",
                     x["share"]])
    for x in a.get("flows", {}).get("transitions", []):
        rows.append(["transition", x["from"], _name(names, x["from"]), f"then:{x['to']}",
                     x["visits"]])
    w.writerows(rows)
    return len(rows)


# --- Parquet (large reports and sightings exports) ----------------------------------------

REPORT_PARQUET = (
    ("visitor_id", "VARCHAR"), ("total_appearances", "INTEGER"),
    ("locations_visited", "INTEGER"),
    ("locations", "STRUCT(location_id VARCHAR, name VARCHAR, visits INTEGER)[]"),
    ("first_seen", "TIMESTAMPTZ"), ("last_seen", "TIMESTAMPTZ"), ("sightings", "INTEGER"),
)
SIGHTINGS_PARQUET = (
    ("face_id", "VARCHAR"), ("face_image_id", "VARCHAR"), ("image_id", "VARCHAR"),
    ("camera_id", "VARCHAR"), ("location_id", "VARCHAR"), ("ts", "TIMESTAMPTZ"),
    ("bbox_x", "INTEGER"), ("bbox_y", "INTEGER"), ("bbox_w", "INTEGER"),
    ("bbox_h", "INTEGER"), ("quality", "REAL"), ("match_score", "REAL"),
)
PARQUET_CHUNK = 100_000


def write_parquet(path: Any, columns: tuple[tuple[str, str], ...],
                  rows: Iterable[tuple[Any, ...]]) -> int:
    """Rows into one Parquet file through an in-memory DuckDB (which spills to disk past
    its memory limit), loaded a chunk at a time; the file appears whole or not at all."""
    import os

    import duckdb

    tmp = f"{path}.part"
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (" + ", ".join(f"{n} {t}" for n, t in columns) + ")")
        load = ("INSERT INTO t SELECT * FROM (SELECT "
                + ", ".join(f"unnest(?::{t}[])" for _, t in columns) + ")")
        n = 0
        for chunk in _chunks(rows, PARQUET_CHUNK):
            con.execute(load, [list(col) for col in zip(*chunk, strict=True)])
            n += len(chunk)
        con.execute("COPY t TO ? (FORMAT PARQUET, COMPRESSION ZSTD)", [tmp])
        os.replace(tmp, path)
    finally:
        con.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return n


def _chunks(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def write_report_parquet(rows: Iterable[ReportRow], path: Any,
                         names: Names | None = None) -> int:
    return write_parquet(path, REPORT_PARQUET, (
        (r.visitor_id, r.total_appearances, r.locations_visited,
         [{"location_id": loc, "name": _name(names, loc), "visits": n}
          for loc, n in r.visits_per_location.items()],
         r.first_seen, r.last_seen, r.sightings) for r in rows))


def write_sightings_parquet(sightings: Iterable[dict[str, Any]], path: Any) -> int:
    return write_parquet(path, SIGHTINGS_PARQUET,
                         (tuple(s.get(k) for k, _ in SIGHTINGS_PARQUET) for s in sightings))


def read_report_csv(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Parse a report CSV back (skips ``#`` header comments): for tests and tooling."""
    return csv.DictReader(line for line in lines if not line.startswith("#"))
