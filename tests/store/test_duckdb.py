"""DuckDB-specific behaviour: schema versioning, read-only opening, write atomicity."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from revisit.store.dialect import DUCKDB
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.schema import migrations
from revisit.store.testing import at, batch, sighting

MIGRATIONS = migrations(DUCKDB)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _sql(s: DuckDBStore, sql: str) -> list:
    with s.read() as session:
        return session.execute(sql).fetchall()


def test_schema_version_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        s.write(batch([sighting("V-000001", at(0))]))
    with DuckDBStore(path) as s:  # reopening applies nothing twice and keeps data
        assert s.schema_version() == SCHEMA_VERSION
        assert _sql(s, "SELECT count(*) FROM schema_version") == [(len(MIGRATIONS),)]
        assert s.stats("default")["sightings"] == 1


def test_new_migration_is_applied_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revisit.store.sql_store as mod

    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    extra = (SCHEMA_VERSION + 1, ["ALTER TABLE locations ADD COLUMN region VARCHAR"])
    monkeypatch.setattr(mod, "migrations", lambda d: [*MIGRATIONS, extra])
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
        _sql(s, "SELECT region FROM locations")


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revisit.store.sql_store as mod

    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    bad = (SCHEMA_VERSION + 1, ["CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"])
    monkeypatch.setattr(mod, "migrations", lambda d: [*MIGRATIONS, bad])
    with pytest.raises(duckdb.Error):
        DuckDBStore(path)
    monkeypatch.undo()
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        tables = {r[0] for r in _sql(s, "SHOW TABLES")}
        assert "half" not in tables


def test_store_from_before_one_migration_list_is_upgraded(tmp_path: Path) -> None:
    """A file made when DuckDB had its own list (versions 1, 2: no resolve tables, no
    identity_version) opens, keeps its data and reaches the current version."""
    path = tmp_path / "old.duckdb"
    with DuckDBStore(path) as s:
        s.write(batch([sighting("V-000001", at(0))]))
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE resolve_cursors")
    con.execute("DROP TABLE resolve_parked")
    con.execute("ALTER TABLE tenants DROP COLUMN identity_version")
    con.execute("DROP TABLE batch_status")  # and what later versions added
    con.execute("DROP TABLE resolve_skipped")
    con.execute("DROP TABLE camera_scenes")
    con.execute("DROP TABLE visit_spans")
    con.execute("ALTER TABLE sightings DROP COLUMN zone")
    for table in ("occupancy_cameras", "occupancy_locations", "people_counts", "display_keys",
                  "alert_rules", "alert_state", "alerts", "alert_deliveries", "enrolments",
                  "watchlist_settings", "held_faces", "face_crops", "open_tracks"):
        con.execute(f"DROP TABLE {table}")
    con.execute("ALTER TABLE tenancy_keys DROP COLUMN expires_at")
    con.execute("ALTER TABLE tenancy_keys DROP COLUMN sessions_after")
    con.execute("DELETE FROM schema_version WHERE version > 2")
    con.close()
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.stats("default")["sightings"] == 1
        # the visits rollup was backfilled from the sightings already there
        assert s.connection.execute("SELECT n, path FROM visit_spans").fetchall() == [
            (1, "L1-cam1")]
        assert s.identity_version("default") == 0
        s.write(batch([sighting("V-000002", at(1))]))
        with s.identity_transaction(["default"], stream="st") as tx:
            tx.advance("st", 3)
            tx.bump(["default"])
        assert s.identity_version("default") == 1
        assert s.stats("default")["sightings"] == 2


def test_read_only_open_reads(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        s.write(batch([sighting("V-000001", at(0))]))
    with DuckDBStore(path, read_only=True) as s:
        assert s.max_visitor_number("default") == 1
        with pytest.raises(duckdb.Error):
            s.write(batch([sighting("V-000002", at(0))]))


def test_in_memory_store() -> None:
    with DuckDBStore(":memory:") as s:
        s.write(batch([sighting("V-000001", at(0))]))
        assert s.tenants() == ["default"]


def test_threads_and_memory_limit(tmp_path: Path) -> None:
    with DuckDBStore(tmp_path / "s.duckdb", threads=2, memory_limit="512MB") as s:
        assert _sql(s, "SELECT current_setting('threads')") == [(2,)]


def test_write_while_streaming_in_same_thread(tmp_path: Path) -> None:
    from datetime import date

    from revisit.report.query import ReportQuery

    with DuckDBStore(tmp_path / "s.duckdb") as s:
        s.write(batch([sighting(f"V-{i:06X}", at(i)) for i in range(1, 21)]))
        q = ReportQuery(date(2024, 3, 1), date(2024, 3, 1))
        seen = []
        for row in s.report_rows(q):  # the stream has its own cursor
            seen.append(row.visitor_id)
            s.write(batch([sighting("V-0000FF", at(500))]))
            s.report_header(q)
        assert len(seen) == 20
        assert s.report_header(q).unique_visitors == 21


def test_a_store_of_a_newer_revisit_is_refused(tmp_path: Path) -> None:
    """Its tables may hold what this version would neither keep nor erase."""
    from revisit.store.base import StoreUnavailable

    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s, s.transaction() as t:
        t.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 5])
    with pytest.raises(StoreUnavailable, match=f"newer revisit.*{SCHEMA_VERSION + 5}"):
        DuckDBStore(path)


def test_columns_once_added_to_shipped_migrations_reach_stores_past_them(
        tmp_path: Path) -> None:
    """Stores made between those edits and this fix lacked sightings.zone and three more
    columns (ingest failed on them); the next start adds them."""
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s, s.transaction() as t:
        for table, col in (("sightings", "zone"), ("people_counts", "points"),
                           ("alerts", "subject"), ("alert_state", "last_ts")):
            t.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        t.execute("DELETE FROM schema_version WHERE version > 13")
    with DuckDBStore(path) as s:
        s.write(batch([sighting("V-000001", at(0))]))
        assert s.stats("default")["sightings"] == 1
        assert _sql(s, "SELECT count(zone) FROM sightings") == [(0,)]
        _sql(s, "SELECT points FROM people_counts")
        _sql(s, "SELECT subject FROM alerts")
        _sql(s, "SELECT last_ts FROM alert_state")
