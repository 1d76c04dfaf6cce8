"""``revisit status`` and PipelineStatus against real services: counts that are not capped,
a broker that is down or a queue URL that is wrong refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.distributed_harness import free_port

from revisit.config import load_settings
from revisit.distributed.status import PipelineStatus

REVISIT = str(Path(sys.executable).with_name("revisit"))


def _cli(args: list[str], env_extra: dict[str, str], data: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env.update({"REVISIT_DATA": str(data), **env_extra})
    return subprocess.run([REVISIT, *args], env=env, text=True, capture_output=True,
                          timeout=120)


def test_skipped_batches_are_all_counted(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    from revisit.store.postgres_store import PostgresStore

    store = PostgresStore(pg_url)
    with store.identity_transaction(stream="s-gap") as tx:
        tx.skip("s-gap", 1, 1234, "default", "test: never turned up")
    with store.identity_transaction(stream="s-gap") as tx:
        assert tx.take_skipped("s-gap", 7)  # one turned up after all
    settings = load_settings(None, data=tmp_path / "d", store_url=pg_url, queue_url=redis_url)
    status = PipelineStatus(settings, store)
    try:
        assert status.read()["skipped_batches"] == 1233  # not the 1000 listed at most
    finally:
        status.close()
    assert len(store.skipped_batches(pending_only=True, limit=10)) == 10
    assert store.count_skipped_batches("default") == 1234
    assert store.count_skipped_batches("other") == 0
    store.close()
    out = _cli(["status"], {"REVISIT_STORE_URL": pg_url, "REVISIT_QUEUE_URL": redis_url},
               tmp_path / "d")
    assert out.returncode == 0, out.stderr
    assert "skipped batches not turned up: 1233" in out.stdout


def test_status_with_kafka_down_says_one_line(tmp_path: Path) -> None:
    """No broker on the port: one ``error:`` line and exit code 2, not a traceback (nor the
    client library's retry log)."""
    out = _cli(["status"], {"REVISIT_QUEUE_URL": f"kafka://127.0.0.1:{free_port()}"},
               tmp_path / "d")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: KafkaException"), out.stderr
    assert "Broker transport failure" in lines[0]


def test_unavailable_errors_include_kafkas() -> None:
    """The API answers 503 (and the CLI one line) for what unavailable_errors() lists."""
    from confluent_kafka import KafkaException

    from revisit.backends import unavailable_errors

    assert KafkaException in unavailable_errors()
