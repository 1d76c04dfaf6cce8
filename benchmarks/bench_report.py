"""Report query speed on a synthetic DuckDB store.

    .venv/bin/python benchmarks/bench_report.py --sightings 10000000 --locations 10000

Rows are generated inside DuckDB (not through ``write``) in ingest order (time), so the
table looks like one a long-running pipeline leaves behind. Prints timings and writes
benchmarks/results/report_duckdb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from revisit.report.query import ReportQuery
from revisit.store.duckdb_store import DuckDBStore


def build(store: DuckDBStore, n: int, locations: int, visitors: int, days: int) -> float:
    t = time.perf_counter()
    cur = store._cur()
    cur.execute(
        f"""
        INSERT INTO sightings
        SELECT 'default', 'F-' || i, 'V-' || lpad(upper(to_hex(1 + hash(i) % {visitors})), 6, '0'),
               'I-' || i, 'C-' || (hash(i * 7) % {locations * 2}),
               'L-' || lpad(((hash(i * 7) % {locations * 2}) // 2)::VARCHAR, 5, '0'),
               TIMESTAMP '2024-01-01' + to_microseconds((i * ({days} * 86400000000 // {n}))::BIGINT),
               10, 20, 64, 80, 0.9, 0.7
        FROM range({n}) r(i)
        """
    )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sightings", type=int, default=10_000_000)
    ap.add_argument("--locations", type=int, default=10_000)
    ap.add_argument("--visitors", type=int, default=2_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--report-locations", type=int, default=2_000)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    path = args.db or Path(tmp.name) / "bench.duckdb"
    fresh = not path.exists()
    store = DuckDBStore(path, threads=args.threads)
    load_s = build(store, args.sightings, args.locations, args.visitors, args.days) if fresh else 0
    print(f"load {args.sightings:,} sightings: {load_s:.1f} s")
    locs = tuple(f"L-{i:05d}" for i in range(0, args.locations, args.locations
                                                // args.report_locations))
    q = ReportQuery(date(2024, 2, 1), date(2024, 2, 29), locations=locs,
                    visit_gap=timedelta(minutes=30))
    results = {}
    for name, query in (("month_subset", q), ("month_all", ReportQuery(q.start, q.end))):
        t = time.perf_counter()
        h = store.report_header(query)
        th = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(1 for _ in store.report_rows(query))
        tr = time.perf_counter() - t
        print(f"{name}: header {th:.2f} s, rows {tr:.2f} s ({n:,} visitors, "
              f"{h.total_sightings:,} sightings, {h.total_visits:,} visits)")
        results[name] = {"header_s": th, "rows_s": tr, "visitors": n,
                         "sightings": h.total_sightings}
    out = Path(__file__).parent / "results" / "report_duckdb.json"
    out.write_text(json.dumps({
        "sightings": args.sightings, "locations": args.locations, "visitors": args.visitors,
        "cpus": os.cpu_count(), "threads": args.threads, "machine": platform.machine(),
        "load_s": load_s, **results,
    }, indent=2))
    store.close()


if __name__ == "__main__":
    main()
