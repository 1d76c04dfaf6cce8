"""The retention of what the service keeps besides a tenant's data: finished batch
statuses, failed spooled batches and the broker's dead letters. One function, run by the
server's scheduled purge and by ``revisit admin purge`` alike, so both keep the same rule
(the CLI imports this module, not the HTTP app)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from revisit.api.spool import Spool
from revisit.ingest.status import BatchLedger
from revisit.store.base import SightingStore
from revisit.tenancy.db import Tenancy
from revisit.tenancy.privacy import retention_cutoff

if TYPE_CHECKING:
    from revisit.distributed.status import PipelineStatus


def purge_held_batches(
    store: SightingStore, tenancy: Tenancy, spool: Spool | None,
    pipeline: PipelineStatus | None, status_days: int, now: datetime | None = None,
) -> str | None:
    """Delete finished batch statuses and failed spooled batches older than
    ``status_days``, failed batches whose snapshots are all past their tenant's
    retention, and the stage queues' dead letters past the fixed age or, as failed
    batches, past their tenant's retention. Returns why the dead letters
    were not trimmed (the broker is away), or None: that must not undo the rest."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cutoff = now - timedelta(days=status_days)
    BatchLedger(store).forget_before(cutoff.replace(tzinfo=None))
    cutoffs: dict[str, datetime] = {}

    def retention(tenant: str) -> datetime:
        if tenant not in cutoffs:
            cutoffs[tenant] = retention_cutoff(store, tenancy, tenant, now)
        return cutoffs[tenant]

    if spool is not None:
        spool.forget_failed_before(cutoff.timestamp(), retention)
    if pipeline is not None:  # dead letters hold snapshots, as failed batches do
        try:
            pipeline.forget_dead(retention)
        except Exception as exc:
            return f"dead letters not trimmed (broker: {exc})"
    return None
