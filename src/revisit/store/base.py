"""The sighting store contract. :class:`revisit.store.sql_store.SQLStore` implements it
once, on DuckDB (default) and PostgreSQL; both pass ``tests/store/test_contract.py``.

The store is the source of truth for everything resolution learned: sightings, visitors,
exemplars (the embeddings a face index searches) and aliases (merges). A face index is a
search structure rebuilt from, or living beside, the store's exemplars.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from revisit.records import Batch, Exemplar, Face, SavedTrack
from revisit.report.query import ReportHeader, ReportQuery, ReportRow, SightingQuery

if TYPE_CHECKING:
    from revisit.store.sql_store import IdentityTransaction


class StoreUnavailable(RuntimeError):
    """The store cannot be opened (held by another process, server unreachable), with a
    message that says what to do."""


class QueryTimeout(RuntimeError):
    """A read ran past the time budget of its thread (:func:`time_budget`) and was stopped."""


_budget = threading.local()


@contextlib.contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Reads this thread makes inside stop after ``seconds`` in all (``None``: no limit):
    the engines interrupt the query (DuckDB) or set ``statement_timeout`` (PostgreSQL) and
    raise :class:`QueryTimeout`. A service gives each request's reads one budget."""
    before = getattr(_budget, "deadline", None)
    _budget.deadline = None if seconds is None else time.monotonic() + seconds
    try:
        yield
    finally:
        _budget.deadline = before


def budget_left() -> float | None:
    """Seconds left of this thread's budget (``None``: unbounded); QueryTimeout at 0."""
    deadline = getattr(_budget, "deadline", None)
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise QueryTimeout("the time budget of this request is spent")
    return left


@dataclass(frozen=True, slots=True)
class VisitorDetail:
    """What the store knows about one (canonical) visitor, for admin/API views."""

    visitor_id: str  # canonical id
    aliases: tuple[str, ...] = ()  # ids merged into it
    sightings: int = 0
    locations: dict[str, int] = field(default_factory=dict)  # location id -> sightings
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    exemplars: int = 0
    exemplar_quality_mean: float | None = None
    exemplar_quality_max: float | None = None


@dataclass(frozen=True, slots=True)
class MergeRecord:
    """One recorded merge: ``absorb`` now reads as ``keep``; ``split_at`` set once undone."""

    merge_id: int
    tenant: str
    keep: str
    absorb: str
    merged_at: datetime
    reason: str = ""
    split_at: datetime | None = None


@runtime_checkable
class SightingStore(Protocol):
    def known_frames(self, tenant: str, image_ids: Iterable[str]) -> set[str]:
        """Which of these frames were already stored (processed), so re-ingest skips them."""
        ...

    def existing_sightings(self, tenant: str, face_image_ids: Iterable[str]) -> dict[str, str]:
        """face_image_id -> visitor id for faces already stored (redelivered work)."""
        ...

    def write(self, batch: Batch) -> None:
        """Store a resolved batch atomically and idempotently: frames, sightings, new visitors,
        exemplar changes, cameras/locations seen first, the faces the resolver holds, the
        crops the faces carry (only with ``privacy.keep_crops``), and the erasure of the
        visitors the resolver withdrew (never people). A repeated batch changes nothing."""
        ...

    def held_faces(self, tenant: str) -> list[Face]:
        """Faces a resolver held (tracks not decided yet) when it last wrote, in time
        order: what a resolver that starts up continues. ``write`` keeps them from
        ``Batch.held`` and ``Batch.released``."""
        ...

    def open_tracks(self, tenant: str) -> list[SavedTrack]:
        """Camera tracks a run or a server left open when it stopped: what the next start
        continues. ``write`` saves them from ``Batch.tracks_saved`` and deletes a tenant's
        with ``Batch.tracks_cleared``."""
        ...

    def held_tenants(self, idle_before: datetime | None = None) -> list[str]:
        """Tenants with held faces (with ``idle_before``: none written since)."""
        ...

    def load_exemplars(self, tenant: str, chunk: int = ...,
                       enrolments_only: bool = False) -> Iterator[list[Exemplar]]:
        """All exemplars of a tenant, in chunks, to (re)build a face index (or only those
        of enrolment photos)."""
        ...

    def tenants(self) -> list[str]: ...

    def staff(self, tenant: str) -> tuple[str, ...]:
        """Visitor ids of the tenant's active staff enrolments (revisit.known)."""
        ...

    def max_visitor_number(self, tenant: str) -> int:
        """Highest visitor number issued in this tenant (0 if none)."""
        ...

    def report_header(self, query: ReportQuery) -> ReportHeader: ...

    def report_rows(self, query: ReportQuery) -> Iterator[ReportRow]:
        """Rows sorted by total appearances (desc) then visitor id, streamed."""
        ...

    def report(self, query: ReportQuery) -> tuple[ReportHeader, Iterator[ReportRow]]:
        """Header and rows from one read, so they agree while sightings are written
        (``report_header`` and ``report_rows`` are two reads); close the rows if they are
        not read to the end."""
        ...

    def sightings(self, query: SightingQuery) -> Iterator[dict[str, Any]]: ...

    def read(self) -> AbstractContextManager[Any]:
        """A read :class:`revisit.store.dialect.Session` on the store's database (the
        dashboard's summary SQL)."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """One transaction on the store's database: for the tables other concerns keep
        in it (tenancy), so every process using the store sees the same rows."""
        ...

    def rebuild_rollup(self, tenant: str | None = None) -> None:
        """Recompute the report rollup from the sightings (after a load that bypassed
        ``write``). Reports use it when ``use_rollup`` is true and it answers exactly."""
        ...

    # --- identity maintenance (merges are recorded as aliases, never destructive) ---

    def identity_transaction(self, tenants: Iterable[str] = (), stream: str | None = None
                             ) -> AbstractContextManager[IdentityTransaction]:
        """One transaction holding the locks of ``stream`` then ``tenants`` (always in that
        order, so no deadlock): identity changes made and written inside (resolution,
        enrolments) are serialised per tenant across every process on the database."""
        ...

    def identity_version(self, tenant: str) -> int:
        """The tenant's counter every identity change moves (0 if none): a resolver whose
        gallery was loaded at an older one reloads it. A cheap read (readiness probe)."""
        ...

    def skipped_batches(self, tenant: str | None = None, pending_only: bool = False,
                        limit: int = 1000) -> list[dict[str, Any]]:
        """Stream gaps resolve gave up waiting for, newest first (``tenant``: those that
        held it), at most ``limit``."""
        ...

    def count_skipped_batches(self, tenant: str | None = None,
                              pending_only: bool = False) -> int:
        """How many :meth:`skipped_batches` would list without a limit (a metric)."""
        ...

    def parked_streams(self) -> list[str]:
        """Streams with batches waiting in resolve's reorder buffer (pipeline status)."""
        ...

    def canonical_id(self, tenant: str, visitor_id: str) -> str:
        """The id a visitor reads as after merges (itself if never merged)."""
        ...

    def live_visitors(self, tenant: str, visitor_ids: Iterable[str]) -> dict[str, str | None]:
        """Each id as it reads now: its canonical id, or None where that visitor is gone
        (erased). One read for them all (open tracks re-checked after a start or a merge)."""
        ...

    def merge_visitors(self, tenant: str, keep: str, absorb: str, reason: str = "") -> MergeRecord:
        """Make ``absorb`` (and everything merged into it) read as ``keep``; reversible."""
        ...

    def split_visitor(self, tenant: str, merged_id: str) -> MergeRecord:
        """Undo the merge that absorbed ``merged_id``; reports return to their old numbers.
        KeyError: no such visitor in the tenant; ValueError: it is not merged."""
        ...

    def erase_visitor(self, tenant: str, visitor_id: str) -> tuple[dict[str, int], list[str]]:
        """Delete a visitor and everything merged with it (privacy); returns the deleted
        counts and the face_image_ids of the exemplars deleted (for the face index)."""
        ...

    def visitor_detail(self, tenant: str, visitor_id: str) -> VisitorDetail | None: ...

    def camera_location(self, tenant: str, camera_id: str) -> str | None:
        """The location a camera's frames were stored under (None: never seen)."""
        ...

    def scene(self, tenant: str, camera_id: str) -> tuple[int, int, bytes] | None:
        """The camera's empty-scene background: (width, height, JPEG), or None."""
        ...

    def face_positions(self, tenant: str, camera_id: str, ts_from: datetime,
                       ts_to: datetime) -> Iterator[list[Any]]:
        """Centres (x, y) of the camera's sightings in [ts_from, ts_to), in chunks, staff
        left out (the face heatmap)."""
        ...

    def people_positions(self, tenant: str, camera_id: str, ts_from: datetime,
                         ts_to: datetime) -> Iterator[list[Any]]:
        """Where the camera's people counter found people in [ts_from, ts_to), in chunks
        (the people heatmap)."""
        ...

    def visitor_crops(self, tenant: str, visitor_id: str) -> list[tuple[str, datetime, bytes]]:
        """(face_image_id, time, JPEG) of the face crops kept of a visitor's merge group
        (``privacy.keep_crops``), in time order."""
        ...

    def visitor_face_ids(self, tenant: str, visitor_id: str) -> set[str]:
        """face_image_ids of every sighting of the visitor's merge group (crop erasure)."""
        ...

    def purge_before(self, tenant: str, cutoff: datetime, now: datetime | None = None
                     ) -> tuple[dict[str, int], list[str]]:
        """Retention: delete the tenant's sightings, embeddings and exemplars older than
        ``cutoff`` (naive UTC), enrolments expired by ``now``, visitors left with no
        sighting and what is derived from all of them, and recompute the tenant's report
        rollup, in one transaction. Returns the deleted counts and the face_image_ids of
        the exemplars deleted (for the face index)."""
        ...

    def merges(self, tenant: str) -> list[MergeRecord]: ...

    def load_embeddings(
        self, tenant: str
    ) -> Iterator[list[tuple[str, str, Any]]]:
        """Every sighting's embedding as (face_image_id, canonical visitor id, vector), chunked."""
        ...

    def stats(self, tenant: str) -> dict[str, int]:
        """Row counts (frames, sightings, visitors, exemplars, embeddings, aliases, ...)."""
        ...

    def close(self) -> None: ...
