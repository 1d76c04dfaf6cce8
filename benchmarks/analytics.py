"""Each analysis of docs/analytics.md timed on the 100M-sighting data set of
``benchmarks/report.py`` (DuckDB store), over the month and the same 2,000 of 10,000 stores.

    .venv/bin/python benchmarks/analytics.py [--db FILE] [--sightings 100000000]

``--db FILE`` reuses a file ``benchmarks/report.py --db FILE`` generated (or generates it
there). The store is opened read-only with a DuckDB ``memory_limit`` (2 GB). Every
analysis is one SQL query over the rollups (``visit_spans``, ``visit_days``); ``--raw``
times the same over the raw sightings, sessionised per request. Writes
``benchmarks/results/analytics_100m.json`` (``analytics_raw_100m.json`` with ``--raw``).

``--timezone Europe/Berlin`` times them with days and hours in that zone (the rollups hold
UTC days: the visits come from ``visit_spans``, those the period cuts from sightings).

``--pg-url URL`` times them on the PostgreSQL store instead, in schema ``bench_report``
as ``benchmarks/report.py --store postgres --db FILE`` loaded it
(``analytics_postgres_100m.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import STORES, _hwm_mb, generate

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="the report benchmark's file")
    ap.add_argument("--sightings", type=int, default=100_000_000)
    ap.add_argument("--visitors", type=int, default=3_500_000)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--pg-url", default=None, help="time on PostgreSQL (schema bench_report)")
    ap.add_argument("--skip", default="", help="analyses to leave out, comma separated")
    ap.add_argument("--raw", action="store_true", help="sessionise the sightings instead")
    ap.add_argument("--timezone", default="UTC",
                    help="days and hours in this IANA zone (outside UTC: visit_spans and "
                    "the cut visits from sightings)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from revisit.report.query import ReportQuery
    from revisit.store import summary as S
    from revisit.store.duckdb_store import DuckDBStore

    out: dict[str, Any] = {}
    store: Any
    if args.pg_url:
        from revisit.store.postgres_store import PostgresStore

        store = PostgresStore(f"{args.pg_url}?schema=bench_report")
        args.out = args.out or RESULTS / (
            "analytics_postgres_raw_100m.json" if args.raw else "analytics_postgres_100m.json")
    else:
        if not args.db.exists():
            out["generate"] = generate(args.db, args.sightings, args.visitors, None, False)
        store = DuckDBStore(args.db, read_only=True, memory_limit=args.memory_limit)
        args.out = args.out or RESULTS / (
            "analytics_raw_100m.json" if args.raw else "analytics_100m.json")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    locs = tuple(f"L-{i:05d}" for i in range(0, STORES, STORES // 2000))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 31), locations=locs, timezone=args.timezone)
    step = timedelta(seconds=15)
    analyses = {
        "totals (new / returning / repeat)": lambda con: S.totals(con, q),
        "daily": lambda con: S.daily(con, q),
        "histogram": lambda con: S.histogram(con, q),
        "per store": lambda con: S.per_location(con, q),
        "dwell": lambda con: S.dwell(con, q, step),
        "hour and weekday": lambda con: S.by_time(con, q),
        "flows (affinity, transitions)": lambda con: S.flows(con, q),
        "camera paths": lambda con: S.camera_paths(con, q),
    }
    timings: dict[str, float] = {}
    with store.read() as con:
        for name, fn in analyses.items():
            if name.split(" ")[0] in skip:
                continue
            t0 = time.perf_counter()
            with S.sessionised(con, q, rollup=not args.raw):
                result = fn(con)
            timings[name] = round(time.perf_counter() - t0, 2)
            size = len(result) if isinstance(result, list | dict) else 0
            print(f"{name}: {timings[name]:.2f} s ({size} items)")
        with S.sessionised(con, q, rollup=not args.raw):
            out["totals"] = S.totals(con, q)
        out["visit_spans_rows"] = con.execute("SELECT count(*) FROM visit_spans").fetchone()[0]
        # what the service runs: the summary, and flows with camera paths, each
        # sessionising the period once
        t0 = time.perf_counter()
        with S.sessionised(con, q, rollup=not args.raw):
            S.summary(con, q, step)
        timings["summary endpoint (sessionised once)"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        with S.sessionised(con, q, rollup=not args.raw):
            S.flows(con, q)
            S.camera_paths(con, q)
        timings["flows endpoint (sessionised once)"] = round(time.perf_counter() - t0, 2)
        print({k: v for k, v in timings.items() if "endpoint" in k})
    store.close()
    out.update({"seconds": timings, "stores_in_filter": len(locs),
                "source": "raw sightings" if args.raw else (
                    "rollups" if q.in_utc else "visit_spans, cut visits from sightings"),
                "timezone": q.timezone,
                "memory_limit": args.memory_limit, "peak_rss_mb": _hwm_mb(),
                "db_sightings": args.sightings})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
