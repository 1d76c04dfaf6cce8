"""What became of each accepted camera batch, kept in the store's database.

Every API replica and worker on one store answers the same: a batch is ``queued`` when
accepted, ``processing`` once the embedded pipeline takes it, and ``done`` (with counts and
per-frame reasons for refused frames) or ``failed`` (with the error). With a broker, the
resolve worker marks it ``done`` in the transaction that stores its sightings, so the
status is exact after any crash; ``processing`` is not shown there (workers do not touch
the store before resolve). Frames another batch stored while this one was in flight (the
same images posted again) are left out there and counted as ``duplicates``, like those
found stored at the door; a batch left with none is ``done`` all the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from revisit.records import Batch, iso_utc
from revisit.store.base import SightingStore


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(ts: datetime | None) -> str | None:
    return iso_utc(ts) or None


@dataclass
class BatchStatus:
    batch_id: str
    tenant: str
    state: str  # queued | processing | done | failed
    frames: int  # frames in the request
    duplicates: int = 0  # frames skipped as already received
    processed: int = 0
    faces: int = 0
    sightings: int = 0
    new_visitors: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    key_id: str = ""  # the key that posted it
    received_at: datetime = field(default_factory=_now)  # naive UTC
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "status": self.state, "frames": self.frames,
            "duplicates": self.duplicates, "processed": self.processed, "faces": self.faces,
            "sightings": self.sightings, "new_visitors": self.new_visitors,
            "rejected": self.rejected, "error": self.error or None,
            "received_at": _iso(self.received_at), "finished_at": _iso(self.finished_at),
        }


_COLUMNS = ("tenant", "batch_id", "key_id", "state", "frames", "duplicates", "processed",
            "faces", "sightings", "new_visitors", "rejected", "error", "received_at",
            "finished_at")


def counts_of(batch: Batch) -> dict[str, Any]:
    """What a processed batch reports: counts and the frames refused on the way."""
    return {
        "processed": len(batch.frames), "faces": len(batch.faces),
        "sightings": len(batch.sightings), "new_visitors": len(batch.visitors_created),
        "rejected": [_rejected(r) for r in batch.rejected],
    }


def _rejected(r: Any) -> dict[str, str]:
    """A frame refused in processing, with the upload's file name where it came from the
    HTTP API (its default image id, a content hash, does not tell the sender which)."""
    out = {"image_id": r.image_id, "reason": r.reason}
    if r.source.startswith("batch:"):
        out["file"] = r.source.removeprefix("batch:")
    return out


class BatchLedger:
    """Batch statuses in the ``batch_status`` table of a store."""

    def __init__(self, store: SightingStore) -> None:
        self.store = store

    def record(self, st: BatchStatus) -> None:
        with self.store.transaction() as s:
            s.execute(
                f"INSERT INTO batch_status ({', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_COLUMNS))}) ON CONFLICT DO NOTHING",
                [st.tenant, st.batch_id, st.key_id or None, st.state, st.frames,
                 st.duplicates, st.processed, st.faces, st.sightings, st.new_visitors,
                 json.dumps(st.rejected), st.error or None, st.received_at, st.finished_at])

    def requeue(self, st: BatchStatus) -> None:
        """Record a batch run again (after a restart, or replayed after failing) as
        ``queued``: its earlier error is cleared, its door refusals kept."""
        with self.store.transaction() as s:
            done = s.count("UPDATE batch_status SET state = 'queued', error = NULL, "
                           "finished_at = NULL WHERE tenant = ? AND batch_id = ?",
                           [st.tenant, st.batch_id])
        if not done:
            self.record(st)

    def forget(self, tenant: str, batch_id: str) -> None:
        """Drop a status recorded for a batch that was then refused (queue full)."""
        with self.store.transaction() as s:
            s.execute("DELETE FROM batch_status WHERE tenant = ? AND batch_id = ?",
                      [tenant, batch_id])

    def processing(self, tenant: str, batch_id: str) -> None:
        """Taken by a stage: also after a failure, when the broker delivered it again
        (the error stays until it is done, saying what happened the time before)."""
        with self.store.transaction() as s:
            s.execute("UPDATE batch_status SET state = 'processing', finished_at = NULL "
                      "WHERE tenant = ? AND batch_id = ? AND state IN ('queued', 'failed')",
                      [tenant, batch_id])

    def finished(self, tenant: str, batch_id: str) -> None:
        """``done`` for a batch found stored after a crash (its counts, if any, kept)."""
        with self.store.transaction() as s:
            s.execute("UPDATE batch_status SET state = 'done', error = NULL, "
                      "finished_at = coalesce(finished_at, ?) WHERE tenant = ? "
                      "AND batch_id = ? AND state <> 'done'", [_now(), tenant, batch_id])

    def failed(self, tenant: str, batch_id: str, error: str) -> None:
        with self.store.transaction() as s:
            s.execute("UPDATE batch_status SET state = 'failed', error = ?, finished_at = ? "
                      "WHERE tenant = ? AND batch_id = ? AND state <> 'done'",
                      [error[:2000], _now(), tenant, batch_id])

    _DONE = ("UPDATE batch_status SET state = 'done', processed = ?, faces = ?, "
             "sightings = ?, new_visitors = ?, rejected = ?, duplicates = duplicates + ?, "
             "finished_at = ?, error = NULL WHERE tenant = ? AND batch_id = ?")

    def done(self, tenant: str, batch: Batch, session: Any = None,
             duplicates: int = 0) -> None:
        """Mark ``batch`` done with its counts (in ``session``'s transaction if given: the
        one that stored its sightings). Frames refused at the door stay listed.
        ``duplicates``: its frames left out because another batch stored them meanwhile
        (added to those skipped at the door)."""
        c = counts_of(batch)
        params = [c["processed"], c["faces"], c["sightings"], c["new_visitors"],
                  json.dumps(c["rejected"]), duplicates, _now(), tenant, batch.batch_id]
        self._done(self._DONE, params, tenant, batch.batch_id, session)  # a redelivery
        # that worked wins (over ``failed``)

    def stored_before(self, tenant: str, batch: Batch, session: Any = None) -> None:
        """``done`` for a batch whose frames were all stored by another batch while it was
        in flight (the same images posted twice): they count as duplicates, nothing as
        processed. A batch done already (a redelivery of one committed) keeps its counts."""
        n = sum(1 for f in batch.frames if f.tenant == tenant)
        rejected = json.dumps(counts_of(batch)["rejected"])
        params = [0, 0, 0, 0, rejected, n, _now(), tenant, batch.batch_id]
        self._done(self._DONE + " AND state <> 'done'", params, tenant, batch.batch_id,
                   session)

    def _done(self, sql: str, params: list[Any], tenant: str, batch_id: str,
              session: Any) -> None:
        if session is not None:
            self._done_in(session, sql, params, tenant, batch_id)
            return
        with self.store.transaction() as s:
            self._done_in(s, sql, params, tenant, batch_id)

    @staticmethod
    def _done_in(s: Any, sql: str, params: list[Any], tenant: str, batch_id: str) -> None:
        row = s.execute("SELECT rejected FROM batch_status WHERE tenant = ? AND batch_id = ?",
                        [tenant, batch_id]).fetchone()
        if row is None:
            return
        door = json.loads(row[0] or "[]")
        params[4] = json.dumps(door + [r for r in json.loads(params[4]) if r not in door])
        s.execute(sql, params)

    def get(self, tenant: str, batch_id: str) -> BatchStatus | None:
        with self.store.read() as s:
            row = s.execute(f"SELECT {', '.join(_COLUMNS)} FROM batch_status "
                            "WHERE tenant = ? AND batch_id = ?", [tenant, batch_id]).fetchone()
        return None if row is None else self._status(row)

    def recent(self, tenant: str, *, state: str | None = None, key_id: str | None = None,
               before: tuple[datetime, str] | None = None,
               limit: int = 100) -> list[BatchStatus]:
        """The tenant's batches, newest first (by reception, then batch id); ``before``:
        (naive UTC time, batch id) of the last one of the previous page; only ``state``'s,
        only ``key_id``'s."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM batch_status WHERE tenant = ?"
        params: list[Any] = [tenant]
        for clause, value in (("state = ?", state), ("key_id = ?", key_id)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        if before is not None:
            sql += " AND (received_at < ? OR (received_at = ? AND batch_id < ?))"
            params += [before[0], before[0], before[1]]
        sql += " ORDER BY received_at DESC, batch_id DESC LIMIT ?"
        with self.store.read() as s:
            rows = s.execute(sql, [*params, limit]).fetchall()
        return [self._status(r) for r in rows]

    @staticmethod
    def _status(row: Any) -> BatchStatus:
        r = dict(zip(_COLUMNS, row, strict=True))
        return BatchStatus(
            batch_id=r["batch_id"], tenant=r["tenant"], state=r["state"], frames=r["frames"],
            duplicates=r["duplicates"], processed=r["processed"], faces=r["faces"],
            sightings=r["sightings"], new_visitors=r["new_visitors"],
            rejected=json.loads(r["rejected"] or "[]"), error=r["error"] or "",
            key_id=r["key_id"] or "", received_at=r["received_at"],
            finished_at=r["finished_at"],
        )

    def forget_before(self, cutoff: datetime) -> int:
        """Delete finished statuses received before ``cutoff`` (naive UTC)."""
        with self.store.transaction() as s:
            return s.count("DELETE FROM batch_status WHERE received_at < ? "
                           "AND state IN ('done', 'failed')", [cutoff])
