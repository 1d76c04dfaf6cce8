"""Face index: nearest stored exemplars of a tenant, by cosine similarity.

The store keeps exemplars (source of truth); an index is a search structure over them. The
embedded default is faiss in memory, rebuilt from the store at start. Each tenant has its
own index, so a face is never compared with another tenant's faces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from revisit.records import Exemplar


@dataclass(frozen=True, slots=True)
class Neighbour:
    visitor_id: str
    face_image_id: str
    score: float  # cosine similarity


@runtime_checkable
class FaceIndex(Protocol):
    def add(self, exemplars: Iterable[Exemplar]) -> None: ...

    def remove(self, tenant: str, face_image_ids: Iterable[str]) -> None: ...

    def remove_visitor(self, tenant: str, visitor_id: str) -> None: ...

    def compact(self, tenant: str) -> None:
        """Leave nothing that :meth:`remove` took out readable in memory: an index that
        only marks removals deletes or overwrites them here, without a rebuild (erasure
        holds the service's write lock). Erasure, retention and an enrolment's removal
        call it; the resolver's routine exemplar swaps do not."""
        ...

    def search(self, tenant: str, embeddings: np.ndarray, k: int, *,
               enough: float | None = None) -> list[list[Neighbour]]:
        """For each row of ``embeddings`` (L2-normalised), up to k neighbours, best first.

        ``enough``: a tiered index may stop at its tier of recently added exemplars for
        rows whose best neighbour there scores at least this (exact indexes ignore it)."""
        ...

    def size(self, tenant: str) -> int: ...


class _Labels(Protocol):
    next_id: int
    meta: dict[int, tuple[str, str]]  # faiss id -> (visitor_id, face_image_id)
    by_face: dict[str, int]
    by_visitor: dict[str, set[int]]


class LabelledIndex:
    """Label bookkeeping shared by the faiss indexes: which faiss ids hold which visitor's
    exemplars. Subclasses keep ``dim`` and ``_tenants`` (tenant -> per-tenant state with
    the fields of :class:`_Labels`) and implement ``_new_tenant``, ``_insert`` (put vectors
    under fresh ids into their faiss structures) and ``_drop`` (remove ids from them, then
    call ``_forget``)."""

    dim: int
    _tenants: dict[str, Any]

    def _new_tenant(self) -> Any:
        raise NotImplementedError

    def _insert(self, t: Any, vecs: np.ndarray, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _drop(self, t: Any, ids: list[int]) -> None:
        raise NotImplementedError

    def _tenant(self, tenant: str) -> Any:
        t = self._tenants.get(tenant)
        if t is None:
            t = self._tenants[tenant] = self._new_tenant()
        return t

    def add(self, exemplars: Iterable[Exemplar]) -> None:
        groups: dict[str, list[Exemplar]] = {}
        for ex in exemplars:
            groups.setdefault(ex.tenant, []).append(ex)
        for tenant, items in groups.items():
            t = self._tenant(tenant)
            fresh = [ex for ex in items if ex.face_image_id not in t.by_face]
            if not fresh:
                continue
            vecs = np.ascontiguousarray(np.stack([ex.embedding for ex in fresh]), dtype=np.float32)
            if vecs.shape[1] != self.dim:
                raise ValueError(f"exemplar has {vecs.shape[1]} dimensions, index has {self.dim}")
            ids = np.arange(t.next_id, t.next_id + len(fresh), dtype=np.int64)
            t.next_id += len(fresh)
            self._insert(t, vecs, ids)
            for fid, ex in zip(ids.tolist(), fresh, strict=True):
                t.meta[fid] = (ex.visitor_id, ex.face_image_id)
                t.by_face[ex.face_image_id] = fid
                t.by_visitor.setdefault(ex.visitor_id, set()).add(fid)

    @staticmethod
    def _forget(t: Any, ids: list[int]) -> None:
        """Drop the labels of removed ids."""
        for fid in ids:
            visitor, face = t.meta.pop(fid)
            t.by_face.pop(face, None)
            members = t.by_visitor.get(visitor)
            if members is not None:
                members.discard(fid)
                if not members:
                    del t.by_visitor[visitor]

    def remove(self, tenant: str, face_image_ids: Iterable[str]) -> None:
        t = self._tenants.get(tenant)
        if t is not None:
            self._drop(t, [t.by_face[f] for f in face_image_ids if f in t.by_face])

    def remove_visitor(self, tenant: str, visitor_id: str) -> None:
        t = self._tenants.get(tenant)
        if t is not None:
            self._drop(t, list(t.by_visitor.get(visitor_id, ())))

    def compact(self, tenant: str) -> None:
        """Removal is physical here (``_drop``); a tiered index overrides this."""

    def relabel(self, tenant: str, old: str, new: str) -> None:
        """Re-point exemplars of ``old`` to ``new`` (after a merge)."""
        t = self._tenants.get(tenant)
        if t is None or old not in t.by_visitor:
            return
        ids = t.by_visitor.pop(old)
        for fid in ids:
            t.meta[fid] = (new, t.meta[fid][1])
        t.by_visitor.setdefault(new, set()).update(ids)


class _TenantIndex:
    def __init__(self, dim: int) -> None:
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.next_id = 0
        self.meta: dict[int, tuple[str, str]] = {}  # faiss id -> (visitor_id, face_image_id)
        self.by_face: dict[str, int] = {}
        self.by_visitor: dict[str, set[int]] = {}


class FaissIndex(LabelledIndex):
    """Exact inner-product search per tenant (flat index; exact up to ~10^5 exemplars).

    Exact search keeps identity decisions reproducible; approximate variants for large
    galleries live behind the same interface.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._tenants: dict[str, _TenantIndex] = {}

    def _new_tenant(self) -> _TenantIndex:
        return _TenantIndex(self.dim)

    def _insert(self, t: _TenantIndex, vecs: np.ndarray, ids: np.ndarray) -> None:
        t.index.add_with_ids(vecs, ids)

    def _drop(self, t: _TenantIndex, ids: list[int]) -> None:
        if not ids:
            return
        t.index.remove_ids(np.asarray(ids, dtype=np.int64))
        self._forget(t, ids)

    def search(self, tenant: str, embeddings: np.ndarray, k: int, *,
               enough: float | None = None) -> list[list[Neighbour]]:
        t = self._tenants.get(tenant)
        n = len(embeddings)
        if t is None or t.index.ntotal == 0 or n == 0:
            return [[] for _ in range(n)]
        q = np.ascontiguousarray(embeddings, dtype=np.float32)
        scores, ids = t.index.search(q, min(k, t.index.ntotal))
        out: list[list[Neighbour]] = []
        for row_s, row_i in zip(scores, ids, strict=True):
            hits = []
            for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True):
                if i < 0:
                    continue
                visitor, face = t.meta[i]
                hits.append(Neighbour(visitor, face, float(s)))
            out.append(hits)
        return out

    def size(self, tenant: str) -> int:
        t = self._tenants.get(tenant)
        return 0 if t is None else int(t.index.ntotal)

