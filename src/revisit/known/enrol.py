"""Enrolments: a person made known to a tenant as a member of a group (``staff``,
``watchlist`` or a custom name), from photos or by marking a visitor revisit already
counts.

An enrolment names a visitor id. Enrolled from photos, that is a new visitor whose
exemplars are the photos' faces (found, quality-gated, aligned and embedded exactly like
camera faces): the resolver then recognises the person on camera as it recognises any
visitor. Marked, it is the visitor's existing id, and copies of its best exemplars become
the enrolment's own. An enrolment's exemplars last as long as it does: no retention
purge, and no better camera face, replaces them. Every enrolment keeps who enrolled whom,
when, why and until when; past ``expires_at`` it no longer counts. Removing one deletes
the embeddings its photos gave (and the visitor it created, if no camera ever saw them).
Every change is audited and bumps the tenant's identity version, so resolvers reload.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from revisit.identity.index import FaceIndex
from revisit.records import (
    DEFAULT_TENANT,
    ENROLMENT_EXEMPLAR,
    Batch,
    Exemplar,
    Frame,
    enrolment_exemplar_id,
    iso_utc,
)
from revisit.store.base import SightingStore
from revisit.store.sql_store import redact_audit
from revisit.store.visitor_ids import format_visitor_id
from revisit.tenancy.db import Tenancy, TenancyError

STAFF = "staff"
WATCHLIST = "watchlist"
_GROUP = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
# exemplars a visitor enrolled without photos keeps as the enrolment's own (its best)
VISITOR_EXEMPLARS = 5
_COLS = ("enrolment_id", "grp", "visitor_id", "label", "reason", "source", "enrolled_by",
         "enrolled_at", "expires_at")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _naive(ts: datetime | None) -> datetime | None:
    return None if ts is None else (ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts)


def _expiry(ts: datetime | None) -> datetime | None:
    """An enrolment's end as naive UTC, within the years a report can ask about, and not
    past already (such an enrolment would never count)."""
    try:
        out = _naive(ts)
    except OverflowError:
        out = None
        bad = True
    else:
        bad = out is not None and not 1970 <= out.year <= 2199
    if bad:
        raise EnrolmentError(f"expires_at {ts.isoformat() if ts else ts} is out of range "
                             "(a time between 1970 and 2199)")
    if out is not None and out <= _now():
        raise EnrolmentError(f"expires_at {_iso(out)} is in the past: the enrolment would "
                             "never count")
    return out


def _iso(ts: datetime | None) -> str | None:
    return iso_utc(ts) or None


@dataclass(frozen=True, slots=True)
class Enrolment:
    enrolment_id: str
    group: str
    visitor_id: str
    label: str
    reason: str
    source: str  # "photos" | "visitor"
    enrolled_by: str
    enrolled_at: datetime
    expires_at: datetime | None
    # when made from photos: those that gave no usable face, with the reason (not kept)
    skipped: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {"enrolment_id": self.enrolment_id, "group": self.group,
               "visitor_id": self.visitor_id, "label": self.label, "reason": self.reason,
               "source": self.source, "enrolled_by": self.enrolled_by,
               "enrolled_at": _iso(self.enrolled_at), "expires_at": _iso(self.expires_at)}
        if self.skipped:
            out["skipped_photos"] = list(self.skipped)
        return out


class EnrolmentError(ValueError):
    """An enrolment that cannot be made, with the reason a person can act on."""


def check_group(group: str) -> str:
    if not _GROUP.match(group):
        raise EnrolmentError(f"group {group!r}: 1-32 lower-case letters, digits, _ or -, "
                             "starting with a letter (e.g. staff, watchlist)")
    return group


class Enrolments:
    def __init__(self, store: SightingStore, tenancy: Tenancy) -> None:
        self.store = store
        self.tenancy = tenancy

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.store.read() as s:
            return list(s.execute(sql, list(params)).fetchall())

    def list(self, tenant: str, group: str | None = None,
             include_expired: bool = False) -> list[Enrolment]:
        sql = f"SELECT {', '.join(_COLS)} FROM enrolments WHERE tenant = ?"
        params: list[Any] = [tenant]
        if group is not None:
            sql += " AND grp = ?"
            params.append(group)
        if not include_expired:
            sql += " AND (expires_at IS NULL OR expires_at > ?)"
            params.append(_now())
        return [Enrolment(*r) for r in self._rows(sql + " ORDER BY enrolled_at, enrolment_id",
                                                  params)]

    def visitors_of(self, tenant: str, visitor_id: str) -> set[str]:
        """The visitor's ids: itself, its canonical id and every id merged with it."""
        canon = self.store.canonical_id(tenant, visitor_id)
        detail = self.store.visitor_detail(tenant, canon)
        return {visitor_id, canon, *(detail.aliases if detail else ())}

    def _insert(self, s: Any, tenant: str, e: Enrolment) -> None:
        s.execute(f"INSERT INTO enrolments (tenant, {', '.join(_COLS)}) VALUES "
                  f"({', '.join('?' * (len(_COLS) + 1))})",
                  [tenant, e.enrolment_id, e.group, e.visitor_id, e.label, e.reason, e.source,
                   e.enrolled_by, e.enrolled_at, e.expires_at])

    def _audit(self, tenant: str, actor: str, action: str, e: Enrolment) -> None:
        self.tenancy.audit(tenant, actor, action, {
            k: v for k, v in e.as_dict().items() if k != "enrolled_at"})

    def enrol_visitor(self, tenant: str, group: str, visitor_id: str, *, label: str = "",
                      reason: str, expires_at: datetime | None = None,
                      actor: str = "cli") -> Enrolment:
        """Mark a visitor revisit already counts as a member of ``group``."""
        check_tenant(self.store, self.tenancy, tenant)
        check_group(group)
        _need_reason(reason)
        _watchlist_on(self.store, tenant, group)
        canon = self.store.canonical_id(tenant, visitor_id)
        if self.store.visitor_detail(tenant, canon) is None:
            raise EnrolmentError(f"no visitor {visitor_id} in tenant {tenant}")
        e = Enrolment("en_" + secrets.token_hex(5), group, canon, label or canon, reason,
                      "visitor", actor, _now(), _expiry(expires_at))
        with self.store.identity_transaction([tenant]) as tx:
            # the visitor's best exemplars become the enrolment's own, which last as long
            # as it does (camera exemplars go with the retention and when better ones come);
            # each copy stays under the id of the merged part it came from, so a split
            # takes it with that part and erasing the part erases it
            group_ids = sorted(self.visitors_of(tenant, canon))
            rows = tx.session.execute(
                "SELECT embedding, quality, visitor_id FROM exemplars WHERE tenant = ? "
                "AND visitor_id IN "
                "(SELECT unnest(?::VARCHAR[])) AND face_image_id NOT LIKE ? "
                "ORDER BY quality DESC, face_image_id LIMIT ?",
                [tenant, group_ids, f"{ENROLMENT_EXEMPLAR}%", VISITOR_EXEMPLARS]).fetchall()
            at = e.enrolled_at.replace(tzinfo=UTC)
            tx.write(Batch(f"enrolment-{e.enrolment_id}", exemplars_added=[
                Exemplar(tenant, str(r[2]), enrolment_exemplar_id(e.enrolment_id, n),
                         np.asarray(r[0], np.float32), float(r[1]), at)
                for n, r in enumerate(rows)]))
            self._insert(tx.session, tenant, e)
            tx.bump([tenant])
        self._audit(tenant, actor, "known.enrol", e)
        return e

    def enrol_photos(self, tenant: str, group: str, photos: Sequence[bytes],
                     process: Callable[[Batch], Batch], *, label: str, reason: str,
                     expires_at: datetime | None = None, actor: str = "cli",
                     new_visitor: Callable[[], str] | None = None) -> Enrolment:
        """Enrol a person from photos of them (one person per photo; the largest good face
        of each is taken). ``process``: detection and embedding, as for camera frames.
        ``new_visitor``: the running resolver's id allocator, where one runs in this
        process (else the next id is taken from the store under the tenant's lock)."""
        check_tenant(self.store, self.tenancy, tenant)
        check_group(group)
        _need_reason(reason)
        _watchlist_on(self.store, tenant, group)
        if not label.strip():
            raise EnrolmentError("a label (a name or staff number) is required")
        if not photos:
            raise EnrolmentError("at least one photo is required")
        now = _now()
        frames = [Frame(tenant, "enrolment", "enrolment", f"enrol-photo-{i}",
                        now.replace(tzinfo=UTC), data=data, source=f"photo {i + 1}")
                  for i, data in enumerate(photos)]
        batch = process(Batch("enrolment", frames=frames))
        problems = {r.image_id: r.reason for r in batch.rejected}
        for d in batch.dropped:
            problems.setdefault(d.image_id, f"{d.reason}: {d.detail}")
        best: dict[str, Any] = {}
        for f in batch.faces:
            if f.embedding is None or not f.creatable:
                problems.setdefault(f.image_id, "the face is too small, blurred or turned "
                                    "to found a visitor")
                continue
            if f.image_id not in best or f.bbox[2] * f.bbox[3] > best[f.image_id].bbox[2] * \
                    best[f.image_id].bbox[3]:
                best[f.image_id] = f
        why = [f"photo {int(fr.image_id.rsplit('-', 1)[1]) + 1}: "
               f"{problems.get(fr.image_id, 'no face found')}"
               for fr in frames if fr.image_id not in best]
        if not best:
            raise EnrolmentError(f"no usable face in the photos ({'; '.join(why)})")
        eid = "en_" + secrets.token_hex(5)
        with self.store.identity_transaction([tenant]) as tx:
            if new_visitor is not None:
                vid = new_visitor()
            else:
                row = tx.session.execute("SELECT max_visitor_number FROM tenants WHERE tenant = ?",
                                         [tenant]).fetchone()
                vid = format_visitor_id((int(row[0]) if row else 0) + 1)
            exemplars = []
            for n, f in enumerate(sorted(best.values(), key=lambda f: f.image_id)):
                v = np.asarray(f.embedding, np.float32)
                exemplars.append(Exemplar(tenant, vid, enrolment_exemplar_id(eid, n),
                                          v / np.linalg.norm(v), f.quality,
                                          now.replace(tzinfo=UTC)))
            tx.write(Batch(f"enrolment-{eid}", visitors_created=[(tenant, vid, now.replace(
                tzinfo=UTC))], exemplars_added=exemplars))
            e = Enrolment(eid, group, vid, label.strip(), reason, "photos", actor, now,
                          _expiry(expires_at), tuple(why))
            self._insert(tx.session, tenant, e)
            tx.bump([tenant])
        self._audit(tenant, actor, "known.enrol", e)
        return e

    def remove(self, tenant: str, enrolment_id: str, actor: str = "cli",
               index: FaceIndex | None = None) -> dict[str, int]:
        """End an enrolment: its row, the embeddings its photos gave (in the store and in
        ``index``: a shared pgvector table has no resolver to tidy it; an approximate index
        is compacted), and the visitor it
        created if no camera ever saw them (nor a visitor merged into it)."""
        rows = self._rows(f"SELECT {', '.join(_COLS)} FROM enrolments WHERE tenant = ? "
                          "AND enrolment_id = ?", [tenant, enrolment_id])
        if not rows:
            raise TenancyError(f"no enrolment {enrolment_id!r} in tenant {tenant}")
        e = Enrolment(*rows[0])
        photos = [tenant, f"{ENROLMENT_EXEMPLAR}{enrolment_id}-%"]
        with self.store.identity_transaction([tenant]) as tx:
            s = tx.session
            ids = [r[0] for r in s.execute("SELECT face_image_id FROM exemplars WHERE "
                                           "tenant = ? AND face_image_id LIKE ?",
                                           photos).fetchall()]
            out = {"exemplars": s.count(
                "DELETE FROM exemplars WHERE tenant = ? AND face_image_id LIKE ?", photos)}
            out["visitors"] = 0
            if e.source == "photos":
                out["visitors"] = s.count(
                    "DELETE FROM visitors v WHERE tenant = ? AND visitor_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM sightings x WHERE x.tenant = v.tenant "
                    "AND x.face_id = v.visitor_id) AND NOT EXISTS (SELECT 1 FROM aliases a "
                    "WHERE a.tenant = v.tenant AND a.visitor_id = v.visitor_id)",
                    [tenant, e.visitor_id])
            s.execute("DELETE FROM enrolments WHERE tenant = ? AND enrolment_id = ?",
                      [tenant, enrolment_id])
            # the person's label and the reason go with the enrolment; the log keeps ids
            redact_audit(s, tenant, {enrolment_id}, ("enrolment_id",))
            tx.bump([tenant])
        if index is not None and ids:
            index.remove(tenant, ids)
            # an approximate index only marks them dead: cleared, as erasure does, so no
            # copy of the photos' embeddings stays in memory
            index.compact(tenant)
        self.tenancy.audit(tenant, actor, "known.remove", {
            "enrolment_id": e.enrolment_id, "group": e.group, "visitor_id": e.visitor_id,
            "source": e.source})
        return out


def check_tenant(store: SightingStore, tenancy: Tenancy, tenant: str) -> None:
    """A tenant someone made (registered, or with data), or the embedded default's: a
    mistyped id must not quietly start holding biometric enrolments."""
    if tenant != DEFAULT_TENANT and tenancy.tenant(tenant) is None \
            and tenant not in store.tenants():
        raise EnrolmentError(f"unknown tenant {tenant!r} (create it with `revisit admin "
                             "add-tenant`)")


def _watchlist_on(store: SightingStore, tenant: str, group: str) -> None:
    if group != WATCHLIST:
        return
    with store.read() as s:  # type: ignore[attr-defined]
        row = s.execute("SELECT enabled FROM watchlist_settings WHERE tenant = ?",
                        [tenant]).fetchone()
    if not row or not row[0]:
        raise EnrolmentError("the watchlist is off for this tenant: an admin turns it on, "
                             "stating its purpose (revisit known watchlist --enable "
                             "--purpose ...), before anyone is enrolled in it")


def _need_reason(reason: str) -> None:
    if len(reason.strip()) < 3:
        raise EnrolmentError("say why (reason): every enrolment records its purpose")

