"""DuckDB-specific behaviour: schema versioning, read-only opening, write atomicity."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from revisit.store.duckdb_store import MIGRATIONS, SCHEMA_VERSION, DuckDBStore
from revisit.store.testing import at, batch, sighting


def test_schema_version_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        s.write(batch([sighting("V-000001", at(0))]))
    with DuckDBStore(path) as s:  # reopening applies nothing twice and keeps data
        assert s.schema_version() == SCHEMA_VERSION
        rows = s._cur().execute("SELECT count(*) FROM schema_version").fetchone()
        assert rows == (len(MIGRATIONS),)
        assert s.stats("default")["sightings"] == 1


def test_new_migration_is_applied_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revisit.store.duckdb_store as mod

    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    extra = (SCHEMA_VERSION + 1, ["ALTER TABLE locations ADD COLUMN region VARCHAR"])
    monkeypatch.setattr(mod, "MIGRATIONS", [*MIGRATIONS, extra])
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
        s._cur().execute("SELECT region FROM locations").fetchall()


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revisit.store.duckdb_store as mod

    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    bad = (SCHEMA_VERSION + 1, ["CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"])
    monkeypatch.setattr(mod, "MIGRATIONS", [*MIGRATIONS, bad])
    with pytest.raises(duckdb.Error):
        DuckDBStore(path)
    monkeypatch.undo()
    with DuckDBStore(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        tables = {r[0] for r in s._cur().execute("SHOW TABLES").fetchall()}
        assert "half" not in tables


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
        assert s._cur().execute("SELECT current_setting('threads')").fetchone() == (2,)


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
