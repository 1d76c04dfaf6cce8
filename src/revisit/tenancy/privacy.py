"""Privacy operations: erase one visitor, purge what is older than a tenant's retention.

Both act on the store (source of truth), the face index (so the person is not matched
again), the running resolver's memory (its per-visitor exemplars and open tracks), and write an
audit record; face crops are rows of the store. Callers hold the service's write lock so
no pipeline batch is resolved or stored halfway through. Crop files an earlier version
wrote are looked for wherever ``crops_dir`` is, whatever ``keep_crops`` says now.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from revisit.records import EXPIRED, Batch, Rejected, iso_utc
from revisit.store.base import SightingStore
from revisit.store.crops import erase_crops, purge_crop_days
from revisit.tenancy.db import DEFAULT_RETENTION_DAYS, Tenancy, TenancyError

if TYPE_CHECKING:  # not at run time: the upload path (the accept process) loads no faiss
    from revisit.identity.index import FaceIndex
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


# How long a process trusts a tenant's retention it read: a change made elsewhere (another
# process, `revisit admin set-retention`) is applied at the door within this many seconds.
RETENTION_CACHE_S = 60.0


def expired_reason(tenant: str, days: int, ts: datetime) -> str:
    """Why a snapshot taken at ``ts`` is refused: the tenant would not keep it."""
    return f"ts {iso_utc(ts)} is older than tenant {tenant}'s retention of {days} days"


class RetentionCutoffs:
    """Each tenant's retention, read from the store at most once per ``ttl_s``: snapshots
    older than it are refused wherever they enter (the HTTP door, ``revisit ingest``) and
    again before they are resolved, so the store never keeps what the purge would delete.
    The accept path is latency-sensitive, hence the cache; :meth:`forget` applies a change
    made in this process at once."""

    def __init__(self, store: SightingStore, ttl_s: float = RETENTION_CACHE_S,
                 enabled: bool = True) -> None:
        """``enabled`` false (``privacy.retention_at_door``): nothing is refused."""
        self.tenancy = Tenancy(store)
        self.enabled = enabled
        self.ttl_s = ttl_s
        self._days: dict[str, tuple[int, float]] = {}  # tenant -> (days, read at)
        self._forgets = 0  # a read that a forget() overtook is not cached
        self._lock = threading.Lock()

    def days(self, tenant: str) -> int:
        """The tenant's retention in days (a tenant unknown here keeps the default)."""
        now = time.monotonic()
        with self._lock:
            hit = self._days.get(tenant)
            forgets = self._forgets
        if hit is not None and now - hit[1] < self.ttl_s:
            return hit[0]
        try:
            days = retention_days(self.tenancy.store, self.tenancy, tenant)
        except TenancyError:
            days = DEFAULT_RETENTION_DAYS
        with self._lock:
            if forgets == self._forgets:
                self._days[tenant] = (days, now)
        return days

    def forget(self, tenant: str) -> None:
        """The tenant's retention changed: read it again at the next frame."""
        with self._lock:
            self._days.pop(tenant, None)
            self._forgets += 1

    def refuse(self, batch: Batch, now: datetime | None = None) -> int:
        """Move the batch's frames older than their tenant's retention to its ``rejected``
        (code ``retention``), with what detection made of them (faces, people counts,
        empty-scene backgrounds), so nothing of them is resolved or stored; returns how
        many frames were refused."""
        if not self.enabled:
            return 0
        now = (now or datetime.now(UTC)).astimezone(UTC)
        days = {t: self.days(t) for t in {f.tenant for f in batch.frames}
                | {f.tenant for f in batch.faces} | {c.tenant for c in batch.counts}
                | {s.tenant for s in batch.scenes}}
        cutoff = {t: now - timedelta(days=d) for t, d in days.items()}
        old = [f for f in batch.frames if f.ts < cutoff[f.tenant]]
        if old:
            gone = {(f.tenant, f.image_id) for f in old}
            batch.frames = [f for f in batch.frames if (f.tenant, f.image_id) not in gone]
            batch.dropped = [d for d in batch.dropped if (d.tenant, d.image_id) not in gone]
            batch.rejected.extend(
                Rejected(source=f.source, reason=expired_reason(f.tenant, days[f.tenant], f.ts),
                         image_id=f.image_id, tenant=f.tenant, code=EXPIRED) for f in old)
        batch.faces = [f for f in batch.faces if f.ts >= cutoff[f.tenant]]
        batch.counts = [c for c in batch.counts if c.ts >= cutoff[c.tenant]]
        batch.scenes = [s for s in batch.scenes if s.ts >= cutoff[s.tenant]]
        return len(old)


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
