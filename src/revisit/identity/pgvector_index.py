"""Face index in PostgreSQL with pgvector (``index_url = "pgvector://user@host:port/db"``).

Why: a gallery that outlives any one process and is shared by every resolver, with no
rebuild at start. One table per embedding size (``face_index_<dim>``) holding (tenant,
face_image_id, visitor_id, embedding), an HNSW index with cosine distance, and a B-tree on
(tenant, visitor_id) for removals. Scores are cosine similarities (1 - distance), the same
numbers faiss's inner product gives on L2-normalised vectors.

Tenant isolation is a ``WHERE tenant = ...`` on every query. With HNSW that filter is
applied to the graph's candidates, so a small tenant in a big table could get fewer than k
hits; pgvector >= 0.8 fixes that with iterative index scans (enabled here when available)
and the road beyond one table is a partition (or a Milvus/Qdrant collection) per tenant
shard behind this same interface (docs/scaling.md). Exact results on small tables come from
the planner choosing a sequential scan, which is exact.

URL: ``pgvector://`` is ``postgresql://`` with the extension; ``?schema=`` as for the store.
Needs the ``vector`` extension installed in the server (scripts/services.sh builds it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import psycopg
from psycopg import sql as psql

from revisit.identity.index import Neighbour
from revisit.postgres import ensure_database, parse_url
from revisit.records import Exemplar

EF_SEARCH = 100


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(v, dtype=np.float32).tolist()) + "]"


class PgVectorIndex:
    """:class:`revisit.identity.index.FaceIndex` on a pgvector table."""

    def __init__(self, url: str, dim: int, *, connect_timeout: int = 10) -> None:
        if url.startswith("pgvector://"):
            url = "postgresql://" + url.removeprefix("pgvector://")
        self.conninfo, self.schema = parse_url(url)
        self.dim = dim
        self.table = f"face_index_{dim}"
        self._t = psql.Identifier(self.schema, self.table)
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._setup()
        with self._connect() as probe:
            self._db, self._port = probe.info.dbname, probe.info.port
            self._hosts = {probe.info.host, "127.0.0.1", "localhost"}

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.conninfo, connect_timeout=self.connect_timeout, autocommit=True,
            options=f"-c search_path={self.schema},public",
        )

    @contextlib.contextmanager
    def bind(self, conn: psycopg.Connection) -> Iterator[None]:
        """Run this thread's index changes on ``conn`` (the store's open transaction), so
        exemplars enter the index in the same commit as the sightings that brought them: a
        crash never leaves the index knowing a visitor the store does not. Only when the
        index lives in the store's database and schema; otherwise a no-op."""
        info = conn.info
        same = (info.dbname == self._db and info.host in self._hosts and info.port == self._port)
        if not same:
            yield
            return
        self._local.bound = conn
        try:
            yield
        finally:
            self._local.bound = None

    def _conn(self) -> psycopg.Connection:
        bound = getattr(self._local, "bound", None)
        if bound is not None:
            return bound
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            with contextlib.suppress(psycopg.Error):
                conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
            with contextlib.suppress(psycopg.Error):  # pgvector >= 0.8
                conn.execute("SET hnsw.iterative_scan = relaxed_order")
            self._local.conn = conn
        return conn

    def _exec(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            cur = self._conn().execute(query, params)
        except psycopg.OperationalError:
            self._local.conn = None  # server restarted: reconnect next time
            raise
        return cur.fetchall() if cur.description else []

    def _setup(self) -> None:
        ensure_database(self.conninfo, self.schema, self.connect_timeout)
        t = self._t
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('revisit-pgvector-setup'))")
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            except psycopg.errors.FeatureNotSupported as exc:
                raise RuntimeError(
                    "PostgreSQL has no pgvector extension; install it "
                    "(bash scripts/services.sh builds it) or use the faiss index"
                ) from exc
            conn.execute(psql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (tenant TEXT NOT NULL, "
                "face_image_id TEXT NOT NULL, visitor_id TEXT NOT NULL, "
                "embedding public.vector({}) NOT NULL, PRIMARY KEY (tenant, face_image_id))"
            ).format(t, psql.Literal(self.dim)))
            conn.execute(psql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw "
                "(embedding public.vector_cosine_ops)"
            ).format(psql.Identifier(f"{self.table}_hnsw"), t))
            conn.execute(psql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (tenant, visitor_id)"
            ).format(psql.Identifier(f"{self.table}_visitor"), t))

    # --- FaceIndex ------------------------------------------------------------------

    def add(self, exemplars: Iterable[Exemplar]) -> None:
        rows = []
        for ex in exemplars:
            v = np.asarray(ex.embedding, dtype=np.float32).ravel()
            if v.shape[0] != self.dim:
                raise ValueError(f"exemplar has {v.shape[0]} dimensions, index has {self.dim}")
            rows.append((ex.tenant, ex.face_image_id, ex.visitor_id, _vec(v)))
        if not rows:
            return
        self._exec(psql.SQL(
            "INSERT INTO {} SELECT t, f, v, e::public.vector FROM "
            "unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS x(t, f, v, e) "
            "ON CONFLICT DO NOTHING").format(self._t),
            [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
             [r[3] for r in rows]],
        )

    def remove(self, tenant: str, face_image_ids: Iterable[str]) -> None:
        ids = list(face_image_ids)
        if ids:
            self._exec(psql.SQL("DELETE FROM {} WHERE tenant = %s AND face_image_id = ANY(%s)")
                       .format(self._t), [tenant, ids])

    def remove_visitor(self, tenant: str, visitor_id: str) -> None:
        self._exec(psql.SQL("DELETE FROM {} WHERE tenant = %s AND visitor_id = %s")
                   .format(self._t), [tenant, visitor_id])

    def compact(self, tenant: str) -> None:
        """Deleted rows are gone from every query at once; PostgreSQL's autovacuum
        reclaims their space on disk (docs/privacy.md)."""

    def relabel(self, tenant: str, old: str, new: str) -> None:
        """Re-point exemplars of ``old`` to ``new`` (after a merge)."""
        self._exec(psql.SQL("UPDATE {} SET visitor_id = %s WHERE tenant = %s AND visitor_id = %s")
                   .format(self._t), [new, tenant, old])

    def search(self, tenant: str, embeddings: np.ndarray, k: int, *,
               enough: float | None = None) -> list[list[Neighbour]]:
        q = np.asarray(embeddings, dtype=np.float32)
        if len(q) == 0:
            return []
        query = psql.SQL(
            "SELECT visitor_id, face_image_id, "
            "1 - (embedding OPERATOR(public.<=>) %s::public.vector) "
            "FROM {} WHERE tenant = %s "
            "ORDER BY embedding OPERATOR(public.<=>) %s::public.vector LIMIT %s"
        ).format(self._t)
        out: list[list[Neighbour]] = []
        for row in q:
            v = _vec(row)
            hits = self._exec(query, [v, tenant, v, k])
            out.append([Neighbour(h[0], h[1], float(h[2])) for h in hits])
        return out

    def size(self, tenant: str) -> int:
        rows = self._exec(psql.SQL("SELECT count(*) FROM {} WHERE tenant = %s")
                          .format(self._t), [tenant])
        return int(rows[0][0])

    def clear(self, tenant: str) -> None:
        """Forget a tenant's gallery (a resolver rebuilds it from the store)."""
        self._exec(psql.SQL("DELETE FROM {} WHERE tenant = %s")
                   .format(self._t), [tenant])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
