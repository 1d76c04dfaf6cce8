"""The purge of what the service holds besides tenant data, shared by the server's
scheduled purge and `revisit admin purge`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from revisit.api.housekeeping import purge_held_batches
from revisit.api.spool import Spool
from revisit.backends import open_store
from revisit.config import load_settings
from revisit.records import Batch, Frame
from revisit.tenancy.db import open_tenancy


class _BrokerAway:
    def forget_dead(self, retention: object) -> int:
        raise ConnectionError("Connection refused")


def test_a_broker_away_is_reported_after_the_rest_is_purged(tmp_path: Path) -> None:
    settings = load_settings(None, data=tmp_path / "data")
    settings.data.mkdir(parents=True)
    store = open_store(settings)
    try:
        tenancy = open_tenancy(store, settings.data)
        tenancy.create_tenant("week", retention_days=7)
        spool = Spool(settings.data / "spool")
        old = datetime.now(UTC) - timedelta(days=8)
        spool.put(Batch("B-old", frames=[Frame("week", "cam", "loc", "i1", old, data=b"x")]))
        spool.set_aside("B-old")
        problem = purge_held_batches(store, tenancy, spool, _BrokerAway(),  # type: ignore[arg-type]
                                     status_days=30)
        assert problem == "dead letters not trimmed (broker: Connection refused)"
        assert not list(spool.failed_dir.iterdir())
    finally:
        store.close()
