"""Store backends under test. To add a backend, append a ``pytest.param`` to
``STORE_BACKENDS`` (a factory taking pytest's ``tmp_path``); mark it ``services`` if it
needs a server, and make the factory ``pytest.skip`` cleanly when none is available."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from revisit.store.base import SightingStore


def _duckdb(tmp_path: Path) -> SightingStore:
    from revisit.store.duckdb_store import DuckDBStore

    return DuckDBStore(tmp_path / "store.duckdb")


STORE_BACKENDS: list = [
    pytest.param(_duckdb, id="duckdb"),
]


@pytest.fixture(params=STORE_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SightingStore]:
    """A factory, so a test can reopen the same store (persistence, migrations)."""
    return lambda: request.param(tmp_path)


@pytest.fixture
def store(store_factory: Callable[[], SightingStore]) -> Iterator[SightingStore]:
    s = store_factory()
    yield s
    s.close()
