"""Store backends under test: every entry of ``revisit.store.testing.STORE_BACKENDS``.
To add a backend, register its factory there (tests/report uses the same list)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from revisit.store.base import SightingStore
from revisit.store.testing import STORE_BACKENDS


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SightingStore]:
    """A factory, so a test can reopen the same store (persistence, migrations)."""
    return lambda: STORE_BACKENDS[request.param](tmp_path)


@pytest.fixture
def store(store_factory: Callable[[], SightingStore]) -> Iterator[SightingStore]:
    s = store_factory()
    yield s
    s.close()
