"""Services for the distributed tests: the local PostgreSQL (a schema per test), a private
Redis (its own port, so queue names cannot collide with other tests) and a Tansu
Kafka-protocol broker. Every test here is marked ``services`` and skips cleanly when a
service is not installed."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from benchmarks import distributed_harness as H

PG_URL = os.environ.get("REVISIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/revisit_test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/distributed" in str(item.fspath):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: `pip install -e '.[distributed]'`")
    try:
        psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc} (bash scripts/services.sh)")
    schema = "d_" + uuid.uuid4().hex[:12]
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H.Redis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    r = H.Redis(tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


@pytest.fixture
def redis_url(redis_server: H.Redis) -> str:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url + "?claim_idle_ms=1000"


