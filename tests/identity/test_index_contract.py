"""Behaviour every face index backend must have: faiss (default) and pgvector.

A backend passes this suite or is not offered (``revisit.backends.open_index``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from revisit.identity.index import FaceIndex, FaissIndex
from revisit.records import Exemplar

DIM = 32
T0 = datetime(2024, 3, 1, tzinfo=UTC)
PG_URL = os.environ.get("REVISIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/revisit_test")


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, noise: float) -> np.ndarray:
    w = v + noise * unit(seed, len(v))
    return (w / np.linalg.norm(w)).astype(np.float32)


def ex(visitor: str, face: str, v: np.ndarray, tenant: str = "default") -> Exemplar:
    return Exemplar(tenant, visitor, face, v, 0.9, T0)


@pytest.fixture(params=["faiss", "pgvector"])
def index(request: pytest.FixtureRequest, tmp_path) -> Iterator[FaceIndex]:
    if request.param == "faiss":
        yield FaissIndex(DIM)
        return
    try:
        import psycopg

        from revisit.identity.pgvector_index import PgVectorIndex
    except ImportError as exc:
        pytest.skip(f"{exc.name} is not installed: `pip install -e '.[distributed]'`")
    schema = "i_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    try:
        idx = PgVectorIndex(f"pgvector://{PG_URL.split('://', 1)[1]}?schema={schema}", DIM,
                            connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc} (bash scripts/services.sh)")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield idx
    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    idx.close()


def test_protocol(index: FaceIndex) -> None:
    assert isinstance(index, FaceIndex)


def test_empty_and_unknown_tenant(index: FaceIndex) -> None:
    assert index.size("default") == 0
    assert index.search("default", np.stack([unit(1)]), 5) == [[]]
    assert index.search("default", np.zeros((0, DIM), np.float32), 5) == []


def test_nearest_first_with_cosine_scores(index: FaceIndex) -> None:
    base = [unit(i) for i in range(20)]
    index.add(ex(f"V-{i:06X}", f"F-{i}", v) for i, v in enumerate(base))
    assert index.size("default") == 20
    q = np.stack([near(base[3], 100, 0.2), near(base[7], 101, 0.2)])
    hits = index.search("default", q, 3)
    assert [h[0].visitor_id for h in hits] == ["V-000003", "V-000007"]
    for row, qv in zip(hits, q, strict=True):
        assert len(row) == 3
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)
        expect = float(qv @ base[int(row[0].face_image_id[2:])])
        assert row[0].score == pytest.approx(expect, abs=1e-4)


def test_k_larger_than_gallery(index: FaceIndex) -> None:
    index.add([ex("V-000001", "F-a", unit(1)), ex("V-000002", "F-b", unit(2))])
    assert len(index.search("default", np.stack([unit(1)]), 10)[0]) == 2


def test_add_is_idempotent(index: FaceIndex) -> None:
    e = ex("V-000001", "F-a", unit(1))
    index.add([e])
    index.add([e])
    assert index.size("default") == 1


def test_tenants_are_isolated(index: FaceIndex) -> None:
    v = unit(5)
    index.add([ex("V-000001", "F-a", v, tenant="acme")])
    assert index.search("beta", np.stack([v]), 5) == [[]]
    assert index.size("beta") == 0
    assert index.search("acme", np.stack([v]), 5)[0][0].visitor_id == "V-000001"


def test_remove_and_remove_visitor(index: FaceIndex) -> None:
    index.add([ex("V-000001", "F-a", unit(1)), ex("V-000001", "F-b", unit(2)),
               ex("V-000002", "F-c", unit(3))])
    index.remove("default", ["F-a", "F-missing"])
    assert index.size("default") == 2
    index.remove_visitor("default", "V-000001")
    assert index.size("default") == 1
    hits = index.search("default", np.stack([unit(2)]), 5)[0]
    assert [h.face_image_id for h in hits] == ["F-c"]


def test_wrong_dimension_is_refused(index: FaceIndex) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        index.add([ex("V-000001", "F-a", unit(1, DIM + 1))])


def test_same_neighbours_as_exact_search_on_a_larger_gallery(index: FaceIndex) -> None:
    """500 visitors x 2 exemplars: the top hit of 50 probes equals brute force."""
    vecs = {f"F-{i}": unit(1000 + i) for i in range(1000)}
    index.add(ex(f"V-{i // 2 + 1:06X}", f, v) for i, (f, v) in enumerate(vecs.items()))
    names = list(vecs)
    mat = np.stack(list(vecs.values()))
    probes = np.stack([near(vecs[names[i * 17]], 5000 + i, 0.3) for i in range(50)])
    hits = index.search("default", probes, 5)
    truth = np.argmax(probes @ mat.T, axis=1)
    assert [h[0].face_image_id for h in hits] == [names[t] for t in truth]
