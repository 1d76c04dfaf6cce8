"""The sighting store contract. Every backend (DuckDB default, PostgreSQL) implements it
and passes ``tests/store/test_contract.py``.

The store is the source of truth for everything resolution learned: sightings, visitors,
exemplars (the embeddings a face index searches) and aliases (merges). A face index is a
search structure rebuilt from, or living beside, the store's exemplars.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from revisit.records import Batch, Exemplar
from revisit.report.query import ReportHeader, ReportQuery, ReportRow, SightingQuery


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
        exemplar changes, cameras/locations seen first. A repeated batch changes nothing."""
        ...

    def load_exemplars(self, tenant: str) -> Iterator[list[Exemplar]]:
        """All exemplars of a tenant, in chunks, to (re)build a face index."""
        ...

    def tenants(self) -> list[str]: ...

    def max_visitor_number(self, tenant: str) -> int:
        """Highest visitor number issued in this tenant (0 if none)."""
        ...

    def report_header(self, query: ReportQuery) -> ReportHeader: ...

    def report_rows(self, query: ReportQuery) -> Iterator[ReportRow]:
        """Rows sorted by total appearances (desc) then visitor id, streamed."""
        ...

    def sightings(self, query: SightingQuery) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...
