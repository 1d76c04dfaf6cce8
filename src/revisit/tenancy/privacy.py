"""Privacy operations: erase one visitor, purge what is older than a tenant's retention.

Both act on the store (source of truth), the face index (so the person is not matched
again), the running resolver's memory (its per-visitor exemplars and open tracks), and write an
audit record; face crops are rows of the store. Callers hold the service's write lock so
no pipeline batch is resolved or stored halfway through. Crop files an earlier version
wrote are looked for wherever ``crops_dir`` is, whatever ``keep_crops`` says now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from revisit.identity.index import FaceIndex
from revisit.records import iso_utc
from revisit.store.base import SightingStore
from revisit.store.crops import erase_crops, purge_crop_days
from revisit.tenancy.db import DEFAULT_RETENTION_DAYS, Tenancy, TenancyError

if TYPE_CHECKING:
    from revisit.identity.resolver import Resolver


def erase_visitor(
    store: SightingStore, index: FaceIndex | None, tenancy: Tenancy, tenant: str,
    visitor_id: str, actor: str, crops_dir: Path | None = None,
    resolver: Resolver | None = None,
) -> dict[str, int]:
    """Erase a visitor everywhere; KeyError if the tenant has no such visitor."""
    canon = store.canonical_id(tenant, visitor_id)
    faces = store.visitor_face_ids(tenant, canon) if crops_dir is not None else set()
    detail = store.visitor_detail(tenant, canon)
    group = [canon, *(detail.aliases if detail else ())]
    erased, exemplars = store.erase_visitor(tenant, visitor_id)
    counts = dict(erased)
    try:  # the store has erased: audited whatever happens to the tidying after it
        if index is not None:  # by face id too: an entry may carry a merged or split id
            index.remove(tenant, exemplars)
            for vid in group:
                index.remove_visitor(tenant, vid)
        if resolver is not None:
            resolver.forget(tenant, group, exemplars)
        if index is not None:
            index.compact(tenant)
        if crops_dir is not None and (files := erase_crops(crops_dir, tenant, faces)):
            counts["crop_files"] = files
    finally:
        tenancy.audit(tenant, actor, "visitor.erase", {"visitor_id": visitor_id,
                                                       "canonical_id": canon, **counts})
    return counts


def purgeable_tenants(store: SightingStore, tenancy: Tenancy) -> list[str]:
    """Every tenant retention applies to: those registered, and those with data in the store
    that were never registered (`revisit ingest` writes under ``default``)."""
    return sorted({t.tenant for t in tenancy.tenants()} | set(store.tenants()))


def retention_days(store: SightingStore, tenancy: Tenancy, tenant: str) -> int:
    """The tenant's retention; data under a tenant never registered keeps the default."""
    t = tenancy.tenant(tenant)
    if t is not None:
        return t.retention_days
    if tenant in store.tenants():
        return DEFAULT_RETENTION_DAYS
    raise TenancyError(f"unknown tenant {tenant!r} (no such tenant, and no data under it)")


def retention_cutoff(store: SightingStore, tenancy: Tenancy, tenant: str,
                     now: datetime | None = None) -> datetime:
    """The moment (UTC) before which the tenant's data goes; a tenant neither registered
    nor with data in the store (a failed batch was its first) keeps the default, so
    what waits outside the store (failed spooled batches) is bound by it too."""
    try:
        days = retention_days(store, tenancy, tenant)
    except TenancyError:
        days = DEFAULT_RETENTION_DAYS
    return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(days=days)


def purge_tenant(
    store: SightingStore, index: FaceIndex | None, tenancy: Tenancy, tenant: str,
    actor: str, crops_dir: Path | None = None, now: datetime | None = None,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Delete sightings, embeddings and exemplars older than the tenant's retention, on
    any store (``SightingStore.purge_before``, which also recomputes the report rollup).

    Visitors left with no sighting go too. Frame records (ids and times, no faces) stay so
    an old snapshot sent again is still recognised as already processed.
    """
    days = retention_days(store, tenancy, tenant)
    now_naive = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    cutoff = now_naive - timedelta(days=days)
    counts: dict[str, Any]
    counts, dropped = store.purge_before(tenant, cutoff, now_naive)
    counts = dict(counts)
    counts["cutoff"] = iso_utc(cutoff)
    try:  # the store has purged: audited whatever happens to the tidying after it
        if index is not None and dropped:
            index.remove(tenant, dropped)
        if resolver is not None:
            resolver.forget(tenant, (), dropped)
            if counts.get("enrolments_expired"):
                resolver.sync_known(tenant)
        if index is not None:
            index.compact(tenant)
        if crops_dir is not None and (days := purge_crop_days(crops_dir / tenant,
                                                              cutoff.date())):
            counts["crop_file_days"] = days
    finally:
        tenancy.audit(tenant, actor, "retention.purge", {"retention_days": days,
                                                         **counts})
    return counts
