"""Privacy operations: erase one visitor, purge what is older than a tenant's retention.

Both act on the store (source of truth), the face index (so the person is not matched
again), the crops on disk, and write an audit record. Callers hold the service's write lock
so no pipeline batch is resolved or stored halfway through.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from revisit.identity.index import FaceIndex
from revisit.store.base import SightingStore
from revisit.store.crops import erase_crops, purge_crop_days
from revisit.tenancy.db import Tenancy, connection_for


def _faces_of(store: SightingStore, tenant: str, visitor_id: str) -> set[str]:
    """face_image_ids of a visitor's whole merge group (for crop erasure)."""
    con = connection_for(store)
    if con is None:
        return set()
    cur = con.cursor()
    try:
        canon = store.canonical_id(tenant, visitor_id)
        rows = cur.execute(
            "SELECT s.face_image_id FROM sightings s LEFT JOIN aliases a "
            "ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE s.tenant = ? AND coalesce(a.visitor_id, s.face_id) = ?",
            [tenant, canon],
        ).fetchall()
        return {r[0] for r in rows}
    finally:
        cur.close()


def erase_visitor(
    store: SightingStore, index: FaceIndex | None, tenancy: Tenancy, tenant: str,
    visitor_id: str, actor: str, crops_dir: Path | None = None,
) -> dict[str, int]:
    """Erase a visitor everywhere; KeyError if the tenant has no such visitor."""
    canon = store.canonical_id(tenant, visitor_id)
    faces = _faces_of(store, tenant, canon) if crops_dir is not None else set()
    detail = store.visitor_detail(tenant, canon)
    group = [canon, *(detail.aliases if detail else ())]
    counts = dict(store.erase_visitor(tenant, visitor_id))
    if index is not None:
        for vid in group:
            index.remove_visitor(tenant, vid)
    if crops_dir is not None:
        counts["crops"] = erase_crops(crops_dir, tenant, faces)
    tenancy.audit(tenant, actor, "visitor.erase", {"visitor_id": visitor_id,
                                                   "canonical_id": canon, **counts})
    return counts


def purge_tenant(
    store: SightingStore, index: FaceIndex | None, tenancy: Tenancy, tenant: str,
    actor: str, crops_dir: Path | None = None, now: datetime | None = None,
) -> dict[str, Any]:
    """Delete sightings, embeddings and exemplars older than the tenant's retention.

    Visitors left with no sighting go too. Frame records (ids and times, no faces) stay so
    an old snapshot sent again is still recognised as already processed.
    """
    t = tenancy.require_tenant(tenant)
    con = connection_for(store)
    if con is None:
        raise RuntimeError("retention purge needs the DuckDB store")
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None) - timedelta(
        days=t.retention_days
    )
    cur = con.cursor()
    counts: dict[str, Any] = {}
    try:
        cur.begin()
        try:
            dropped = [r[0] for r in cur.execute(
                "SELECT face_image_id FROM exemplars WHERE tenant = ? AND ts < ?", [tenant, cutoff]
            ).fetchall()]

            def delete(name: str, sql: str, params: list[Any]) -> None:
                counts[name] = len(cur.execute(sql + " RETURNING 1", params).fetchall())

            delete("embeddings",
                   "DELETE FROM embeddings WHERE tenant = ? AND face_image_id IN ("
                   "SELECT face_image_id FROM sightings WHERE tenant = ? AND ts < ?)",
                   [tenant, tenant, cutoff])
            delete("sightings", "DELETE FROM sightings WHERE tenant = ? AND ts < ?",
                   [tenant, cutoff])
            delete("exemplars", "DELETE FROM exemplars WHERE tenant = ? AND ts < ?",
                   [tenant, cutoff])
            delete("visitors",
                   "DELETE FROM visitors v WHERE v.tenant = ? AND NOT EXISTS ("
                   "SELECT 1 FROM sightings s WHERE s.tenant = v.tenant "
                   "AND s.face_id = v.visitor_id) AND NOT EXISTS ("
                   "SELECT 1 FROM aliases a JOIN sightings s ON s.tenant = a.tenant "
                   "AND s.face_id = a.alias_id WHERE a.tenant = v.tenant "
                   "AND a.visitor_id = v.visitor_id)",
                   [tenant])
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
    finally:
        cur.close()
    if index is not None and dropped:
        index.remove(tenant, dropped)
    if crops_dir is not None:
        counts["crop_days"] = purge_crop_days(crops_dir / tenant, cutoff.date())
    counts["cutoff"] = cutoff.replace(tzinfo=UTC).isoformat()
    tenancy.audit(tenant, actor, "retention.purge", {"retention_days": t.retention_days,
                                                     **counts})
    return counts
