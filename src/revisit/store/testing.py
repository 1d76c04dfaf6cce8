"""Hand-built records for store and report tests (no models, no images).

Lives in the package, not under tests/, so every test directory (store, report, pipeline,
API) can build the same batches without sys.path tricks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from revisit.records import DEFAULT_TENANT, Batch, Exemplar, Frame, Sighting, face_image_id
from revisit.store.base import SightingStore

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
_counter = itertools.count()


def at(minutes: float = 0, day: int = 0, base: datetime = T0) -> datetime:
    """``T0`` + ``day`` days + ``minutes``: readable timestamps in tests."""
    return base + timedelta(days=day, minutes=minutes)


def embedding(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def sighting(
    visitor: str, ts: datetime, location: str = "L1", camera: str | None = None,
    tenant: str = DEFAULT_TENANT, image_id: str | None = None, quality: float = 0.9,
    match_score: float = 0.8, with_embedding: bool = True,
) -> Sighting:
    """One sighting; the image id is unique unless given (one face per frame)."""
    image_id = image_id or f"I-{next(_counter):08d}"
    bbox = (10, 20, 64, 80)
    fid = face_image_id(tenant, image_id, bbox)
    return Sighting(
        tenant=tenant, face_id=visitor, face_image_id=fid, image_id=image_id,
        camera_id=camera or f"{location}-cam1", location_id=location, ts=ts, bbox=bbox,
        quality=quality, match_score=match_score,
        embedding=embedding(int(fid[2:10], 16)) if with_embedding else None,
    )


def batch(
    sightings: list[Sighting], batch_id: str | None = None, exemplars: bool = True,
    extra_frames: list[Frame] | None = None,
) -> Batch:
    """A resolved batch: one frame per distinct image, visitors created at first sighting,
    each sighting also offered as an exemplar (when it has an embedding)."""
    frames: dict[tuple[str, str], Frame] = {}
    first: dict[tuple[str, str], datetime] = {}
    for s in sightings:
        frames.setdefault((s.tenant, s.image_id), Frame(
            tenant=s.tenant, camera_id=s.camera_id, location_id=s.location_id,
            image_id=s.image_id, ts=s.ts,
        ))
        key = (s.tenant, s.face_id)
        first[key] = min(first.get(key, s.ts), s.ts)
    ex = [
        Exemplar(s.tenant, s.face_id, s.face_image_id, s.embedding, s.quality, s.ts)
        for s in sightings if exemplars and s.embedding is not None
    ]
    return Batch(
        batch_id=batch_id or f"B-{next(_counter)}",
        frames=[*frames.values(), *(extra_frames or [])],
        sightings=list(sightings),
        exemplars_added=ex,
        visitors_created=[(t, v, ts) for (t, v), ts in first.items()],
    )


def _duckdb_store(tmp_path: Path) -> SightingStore:
    from revisit.store.duckdb_store import DuckDBStore

    return DuckDBStore(tmp_path / "store.duckdb")


# Backends the store contract and report tests run against: name -> factory(tmp_path).
# A server-backed backend's factory should ``pytest.skip`` when no server is available.
STORE_BACKENDS: dict[str, Callable[[Path], SightingStore]] = {"duckdb": _duckdb_store}


def _postgres_store(tmp_path: Path) -> SightingStore:
    """A schema of its own (named after the test's temp dir) in the local PostgreSQL."""
    import hashlib
    import os

    import pytest

    try:
        from revisit.store.postgres_store import PostgresStore
    except ImportError as exc:
        pytest.skip(f"{exc.name} is not installed: `pip install -e '.[distributed]'`")
    url = os.environ.get("REVISIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/revisit_test")
    schema = "t_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    try:
        return PostgresStore(f"{url}?schema={schema}", connect_timeout=3)
    except Exception as exc:
        if "Operational" not in type(exc).__name__:  # any connection failure: no server
            raise
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc} (bash scripts/services.sh)")


STORE_BACKENDS["postgres"] = _postgres_store
