"""The month report over 2,000 of 10,000 stores on 100 million sightings (DuckDB store).

    .venv/bin/python benchmarks/report.py [--sightings 100000000] [--db FILE] [--keep]

Data (generated inside DuckDB with SQL, in the store's own schema, in ingest order):
10,000 stores x 5 cameras, 3.5 M visitors, 31 days (March 2024). Every visitor makes at
least one visit; further visits go to a skewed few (visitor rank ~ u^3: regulars come
back often, most people once); 80 % of a visitor's visits are at their home store, whose
popularity is itself skewed. A visit is 1-23 sightings (mean 12) 30-300 s apart on the
store's cameras, between 08:00 and 22:00. Then the ``visit_days`` rollup is built
(``DuckDBStore.rebuild_rollup``, what ``write`` maintains incrementally). By default the
sightings table is the store's minus its primary-key index (``--primary-key`` keeps it).

The report (header + every row streamed) runs in a child process that opens the file
read-only with a DuckDB ``memory_limit``, so its peak RSS is the report's memory. Twice:
through the rollup and through the raw sessionisation, and the two must agree.
Writes benchmarks/results/report_duckdb_100m.json.

``--store postgres`` (``--pg-url``, default the local server, schema ``bench_report``)
measures the same report on the PostgreSQL store: the data generated as above (or the
DuckDB file given with ``--db``) is COPYed as CSV into a fresh schema's March partition,
the rollup rows are copied from the DuckDB file (same SQL; ``--pg-rollup build`` has
``PostgresStore.rebuild_rollup`` compute them instead, a slow 10^8-row sort), then
VACUUM ANALYZE. The report runs in a child process, through the rollup and raw; its
memory is the client's peak RSS plus the PostgreSQL server processes' peak memory
(sampled PSS, same machine). Writes benchmarks/results/report_postgres_100m.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
STORES = 10_000
CAMERAS_PER_STORE = 5
DAYS = 31


def generate(db: Path, sightings: int, visitors: int, threads: int | None,
             pk: bool) -> dict[str, float]:
    from revisit.store.duckdb_store import DuckDBStore

    store = DuckDBStore(db, threads=threads)
    cur = store.connection
    mean_k = 12
    visits = max(visitors, sightings // mean_k)
    t0 = time.perf_counter()
    # visits: one per visitor, then the rest to a skewed few; sorted by start (ingest order)
    cur.execute(f"""
        CREATE TEMP TABLE visits AS
        WITH v AS (
            SELECT i AS visit,
                   CASE WHEN i < {visitors} THEN i
                        ELSE floor({visitors} * pow(random(), 3))::BIGINT END AS visitor
            FROM range({visits}) r(i)
        ), p AS (
            SELECT visit, visitor,
                   -- home store: skewed popularity (some malls are busier)
                   CASE WHEN random() < 0.8
                        THEN floor({STORES} * pow(((hash(visitor) % 1000003) / 1000003.0), 1.5))
                        ELSE floor(random() * {STORES}) END::BIGINT AS store,
                   floor(random() * {DAYS})::BIGINT * 86400000000
                     + (8 * 3600 + floor(random() * 14 * 3600))::BIGINT * 1000000 AS start_us,
                   1 + floor(random() * 23)::BIGINT AS k,
                   (30 + floor(random() * 270))::BIGINT * 1000000 AS step_us
            FROM v
        )
        SELECT * FROM p ORDER BY start_us
    """)
    n_visits = cur.execute("SELECT count(*), sum(k) FROM visits").fetchone()
    if not pk:
        # Same columns without the (tenant, face_image_id) primary key: its ART index over
        # 10^8 keys took > 20 min to build on 2 busy cores and plays no part in the report.
        cur.execute("DROP TABLE sightings")
        cur.execute("""CREATE TABLE sightings (
            tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
            face_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
            camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL,
            bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER, bbox_h INTEGER,
            quality REAL, match_score REAL, zone VARCHAR)""")
    cur.execute("""
        INSERT INTO sightings
        SELECT 'default', 'F-' || visit || '-' || i,
               'V-' || lpad(upper(to_hex(visitor + 1)), 6, '0'),
               'I-' || visit || '-' || i,
               'C-' || lpad((store * 5 + (hash(visit + i) % 5))::VARCHAR, 5, '0'),
               'L-' || lpad(store::VARCHAR, 5, '0'),
               make_timestamp(1709251200000000 + start_us + i * step_us),
               10, 20, 64, 80, 0.9, 0.7, NULL
        FROM (SELECT visit, visitor, store, start_us, step_us, unnest(range(k)) AS i FROM visits)
    """)
    cur.execute("DROP TABLE visits")
    cur.execute("CHECKPOINT")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.rebuild_rollup()
    cur.execute("CHECKPOINT")
    rollup_s = time.perf_counter() - t0
    counts = {
        "sightings": cur.execute("SELECT count(*) FROM sightings").fetchone()[0],
        "visitors": cur.execute("SELECT count(DISTINCT face_id) FROM sightings").fetchone()[0],
        "rollup_rows": cur.execute("SELECT count(*) FROM visit_days").fetchone()[0],
        "visits_generated": n_visits[0],
    }
    sizes = {r[0]: r[1] for r in cur.execute(
        "SELECT table_name, estimated_size FROM duckdb_tables()").fetchall()}
    store.close()
    return {"load_s": load_s, "primary_key": pk, "rollup_build_s": rollup_s, **counts,
            "file_bytes": db.stat().st_size, "table_rows_estimated": sizes}


def describe(db: Path) -> dict[str, Any]:
    """What a reused file holds (its load times belong to the run that generated it)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    out = {
        "reused_file": str(db), "file_bytes": db.stat().st_size,
        "sightings": con.execute("SELECT count(*) FROM sightings").fetchone()[0],
        "visitors": con.execute("SELECT count(DISTINCT face_id) FROM sightings").fetchone()[0],
        "rollup_rows": con.execute("SELECT count(*) FROM visit_days").fetchone()[0],
    }
    con.close()
    return out


def _copy_csv(conn: Any, table: str, csv: Path) -> None:
    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT csv)") as cp, csv.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            cp.write(chunk)


def load_postgres(db: Path, url: str, tmpdir: Path, work_mem: str,
                  rollup: str) -> dict[str, Any]:
    """The DuckDB file's sightings into a fresh PostgreSQL store (schema ``bench_report``):
    CSV out of DuckDB, COPY into the month's partition. Only the sightings' primary key
    and indexes are left out (as in the DuckDB run: they serve idempotent ingestion and
    visitor lookups, not this report, and would triple the load). The rollup keeps its
    key and index."""
    import duckdb
    import psycopg
    import psycopg.sql

    from revisit.store.postgres_store import PostgresStore

    out: dict[str, Any] = {}
    schema = "bench_report"
    old = PostgresStore(f"{url}?schema={schema}")  # creates the database if needed
    old.drop_schema()
    old.close()
    admin = psycopg.connect(url, autocommit=True)
    # sessions of this database (the load's, the reports') get work_mem for sorts/hashes
    admin.execute(psycopg.sql.SQL("ALTER DATABASE {} SET work_mem = {}").format(
        psycopg.sql.Identifier(admin.info.dbname), psycopg.sql.Literal(work_mem)))
    store = PostgresStore(f"{url}?schema={schema}")
    csv = tmpdir / "sightings.csv"
    t0 = time.perf_counter()
    src = duckdb.connect(str(db), read_only=True)
    src.execute(f"COPY (SELECT * FROM sightings) TO '{csv}' (HEADER false)")
    src.close()
    out["csv_export_s"] = time.perf_counter() - t0
    with store.transaction() as session:
        conn = session.conn  # the psycopg connection (PostgresSession)
        conn.execute("ALTER TABLE sightings DROP CONSTRAINT sightings_pkey")
        for name in ("sightings_report", "sightings_visitor", "sightings_face"):
            conn.execute(f"DROP INDEX {name}")
        conn.execute("CREATE TABLE sightings_2024_03 PARTITION OF sightings "
                     "FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')")
    t0 = time.perf_counter()
    with store.transaction() as session:
        conn = session.conn  # the psycopg connection (PostgresSession)
        _copy_csv(conn, "sightings_2024_03", csv)
    out["copy_s"] = time.perf_counter() - t0
    csv.unlink()
    out["load_s"] = out["csv_export_s"] + out["copy_s"]
    t0 = time.perf_counter()
    if rollup == "build":
        store.rebuild_rollup()
    else:  # the same rows (same SQL, store/report_sql.py) from the DuckDB file, keys built after
        src = duckdb.connect(str(db), read_only=True)
        src.execute(f"COPY (SELECT * FROM visit_days) TO '{csv}' (HEADER false)")
        src.close()
        with store.transaction() as session:
            conn = session.conn  # the psycopg connection (PostgresSession)
            conn.execute("ALTER TABLE visit_days DROP CONSTRAINT visit_days_pkey")
            conn.execute("DROP INDEX visit_days_visitor")
            _copy_csv(conn, "visit_days", csv)
            conn.execute("ALTER TABLE visit_days ADD PRIMARY KEY (tenant, day, location_id, face_id)")
            conn.execute("CREATE INDEX visit_days_visitor ON visit_days (tenant, face_id)")
        csv.unlink()
        # the visits rollup (store/visit_spans.py) likewise
        src = duckdb.connect(str(db), read_only=True)
        src.execute(f"COPY (SELECT * FROM visit_spans) TO '{csv}' (HEADER false)")
        src.close()
        with store.transaction() as session:
            conn = session.conn
            conn.execute("ALTER TABLE visit_spans DROP CONSTRAINT visit_spans_pkey")
            conn.execute("DROP INDEX visit_spans_start")
            _copy_csv(conn, "visit_spans", csv)
            conn.execute("ALTER TABLE visit_spans ADD PRIMARY KEY "
                         "(tenant, face_id, location_id, start_us)")
            conn.execute("CREATE INDEX visit_spans_start ON visit_spans (tenant, start_us)")
        csv.unlink()
    out["rollup"] = rollup
    out["rollup_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    admin.execute(f"VACUUM ANALYZE {schema}.sightings_2024_03")
    admin.execute(f"VACUUM ANALYZE {schema}.visit_days")
    admin.execute(f"VACUUM ANALYZE {schema}.visit_spans")
    out["vacuum_analyze_s"] = time.perf_counter() - t0
    row = admin.execute(
        f"SELECT pg_total_relation_size('{schema}.sightings_2024_03'), "
        f"pg_total_relation_size('{schema}.visit_days'), "
        f"(SELECT count(*) FROM {schema}.sightings_2024_03), "
        f"(SELECT count(*) FROM {schema}.visit_days), "
        f"pg_total_relation_size('{schema}.visit_spans'), "
        f"(SELECT count(*) FROM {schema}.visit_spans)").fetchone()
    out.update(sightings_bytes=row[0], rollup_bytes=row[1], sightings=row[2], rollup_rows=row[3],
               spans_bytes=row[4], spans_rows=row[5])
    admin.close()
    store.close()
    return out


def _postgres_pss_mb() -> float:
    """Memory of every PostgreSQL server process (proportional set size: shared buffers
    counted once), when the server runs on this machine and /proc is readable."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class _PeakSampler:
    """Samples a memory figure in a thread; ``peak`` is the highest seen."""

    def __init__(self, fn: Any, every_s: float = 0.1) -> None:
        import threading

        self.fn, self.every_s = fn, every_s
        self.start_value = self.peak = fn()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.fn())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def query(db: Path, rollup: bool, memory_limit: str, threads: int | None,
          pg_url: str | None = None) -> dict:
    """Runs in a child process: the report with a bounded DuckDB, or on PostgreSQL."""
    from revisit.report.query import ReportQuery
    from revisit.store.duckdb_store import DuckDBStore

    store: Any
    server = None
    if pg_url:
        from revisit.store.postgres_store import PostgresStore

        store = PostgresStore(f"{pg_url}?schema=bench_report")
        server = _PeakSampler(_postgres_pss_mb)
    else:
        store = DuckDBStore(db, read_only=True, memory_limit=memory_limit, threads=threads)
    store.use_rollup = rollup
    locs = tuple(f"L-{i:05d}" for i in range(0, STORES, STORES // 2000))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 31), locations=locs)
    t = time.perf_counter()
    h = store.report_header(q)
    header_s = time.perf_counter() - t
    t = time.perf_counter()
    n = visits = 0
    first_row_s = 0.0
    for row in store.report_rows(q):
        if n == 0:  # ORDER BY: the whole result is computed before the first row
            first_row_s = time.perf_counter() - t
        n += 1
        visits += row.total_appearances
    rows_s = time.perf_counter() - t
    store.close()
    return {
        "server_pss_mb_before": server.start_value if server else None,
        "server_pss_mb_peak": server.stop() if server else None,
        "header_s": header_s, "first_row_s": first_row_s, "rows_s": rows_s,
        "report_s": header_s + first_row_s, "with_all_rows_in_python_s": header_s + rows_s,
        "unique_visitors": h.unique_visitors, "total_visits": h.total_visits,
        "total_sightings": h.total_sightings, "rows": n, "rows_visits": visits,
        "peak_rss_mb": _hwm_mb(),  # VmHWM: this process only (ru_maxrss survives exec)
        "memory_limit": memory_limit,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sightings", type=int, default=100_000_000)
    ap.add_argument("--visitors", type=int, default=3_500_000)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep this file")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the raw sessionisation (no rollup)")
    ap.add_argument("--primary-key", action="store_true",
                    help="keep the store's primary key on sightings (slow to load at 10^8)")
    ap.add_argument("--store", choices=["duckdb", "postgres"], default="duckdb")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/revisit_bench",
                    help="--store postgres: server and database (schema bench_report is replaced)")
    ap.add_argument("--pg-work-mem", default="256MB",
                    help="--store postgres: work_mem of the benchmark database's sessions")
    ap.add_argument("--pg-rollup", choices=["copy", "build"], default="copy",
                    help="--store postgres: copy the rollup rows DuckDB built (same SQL) or "
                    "have PostgreSQL build them (a 10^8-row sort: slow)")
    ap.add_argument("--child", choices=["rollup", "raw"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None,
                    help="results file (default report_<store>_100m.json)")
    args = ap.parse_args()
    pg_url = args.pg_url if args.store == "postgres" else None
    if args.child:
        print(json.dumps(query(args.db, args.child == "rollup", args.memory_limit, args.threads,
                               pg_url)))
        return
    args.out = args.out or f"report_{args.store}_100m.json"
    tmp = tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR"))
    db = args.db or Path(tmp.name) / "report.duckdb"
    if db.exists():
        gen = describe(db)
        print(f"reusing {db}: {gen['sightings']:,} sightings (load figures: the run that made it)")
    else:
        gen = generate(db, args.sightings, args.visitors, args.threads, args.primary_key)
        print(f"load: {gen['sightings']:,} sightings of {gen['visitors']:,} visitors in "
              f"{gen['load_s']:.1f} s; rollup ({gen['rollup_rows']:,} rows) "
              f"{gen['rollup_build_s']:.1f} s; file {gen['file_bytes'] / 1e9:.2f} GB")
    if pg_url:
        gen = {"duckdb_generation": gen, **load_postgres(db, pg_url, Path(tmp.name), args.pg_work_mem,
                                args.pg_rollup),
               "work_mem": args.pg_work_mem}
        print(f"postgres: CSV export {gen['csv_export_s']:.0f} s, COPY {gen['copy_s']:.0f} s, "
              f"load {gen['load_s']:.0f} s, rollup {gen['rollup_build_s']:.0f} s "
              f"({gen['rollup_rows']:,} rows), VACUUM ANALYZE {gen['vacuum_analyze_s']:.0f} s; "
              f"sightings {gen['sightings_bytes'] / 1e9:.2f} GB, rollup "
              f"{gen['rollup_bytes'] / 1e9:.2f} GB")
    out: dict = {"store": args.store, "data": gen, "stores": STORES, "cameras": STORES * CAMERAS_PER_STORE,
                 "days": DAYS, "report_stores": 2000, "cpus": os.cpu_count(),
                 "threads": args.threads}
    for mode in ["rollup", "raw"] if args.raw else ["rollup"]:
        cmd = [sys.executable, __file__, "--child", mode, "--db", str(db),
               "--memory-limit", args.memory_limit]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if pg_url:
            cmd += ["--store", "postgres", "--pg-url", pg_url]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        out[mode] = res
        print(f"{mode:6s}: report {res['report_s']:.2f} s (header {res['header_s']:.2f} s + "
              f"rows computed {res['first_row_s']:.2f} s; all {res['rows']:,} rows streamed "
              f"into Python {res['rows_s']:.2f} s), {res['unique_visitors']:,} visitors, "
              f"{res['total_visits']:,} visits, {res['total_sightings']:,} sightings, "
              f"peak RSS {res['peak_rss_mb']:.0f} MB"
              + (f", server {res['server_pss_mb_before']:.0f} -> {res['server_pss_mb_peak']:.0f} MB"
                 if pg_url else f" (memory_limit {args.memory_limit})"))
    if "raw" in out:
        keys = ("unique_visitors", "total_visits", "total_sightings", "rows", "rows_visits")
        out["rollup_equals_raw"] = all(out["rollup"][k] == out["raw"][k] for k in keys)
        print("rollup == raw:", out["rollup_equals_raw"])
    out["loadavg_1m"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(out, indent=2, default=str))
    if args.db is None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
