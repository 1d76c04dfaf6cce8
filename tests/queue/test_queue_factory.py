"""open_queue picks the backend from the URL and rejects what it cannot serve."""

from __future__ import annotations

import pytest

from revisit.queue.base import StageQueue
from revisit.queue.factory import open_queue
from revisit.queue.memory import MemoryQueue


@pytest.mark.parametrize("url", ["", "memory://"])
def test_memory_is_the_default(url: str) -> None:
    q = open_queue(url, "frames", maxsize=3)
    assert isinstance(q, MemoryQueue) and isinstance(q, StageQueue)
    assert q.name == "frames" and q._q.maxsize == 3


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "amqp://x", "file:///tmp/q"])
def test_unknown_scheme_names_the_accepted_ones(url: str) -> None:
    with pytest.raises(ValueError, match=r"redis://.*kafka://"):
        open_queue(url, "frames")


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="claim_idle"):
        open_queue("redis://127.0.0.1:6379/0?claim_idle=5", "frames")
    with pytest.raises(ValueError, match="integer"):
        open_queue("kafka://127.0.0.1:9092?partitions=many", "frames")


def test_kafka_needs_a_host() -> None:
    with pytest.raises(ValueError, match="host:port"):
        open_queue("kafka://", "frames")


@pytest.mark.services
def test_redis_url_opens_a_stream(redis_url: str) -> None:
    from revisit.queue.redis_streams import RedisStreamQueue

    q = open_queue(redis_url + "?claim_idle_ms=1234", "factory-test", consumer="me", maxsize=5)
    try:
        assert isinstance(q, RedisStreamQueue) and isinstance(q, StageQueue)
        assert (q.key, q.consumer, q.maxlen, q.claim_idle_ms) == (
            "revisit:factory-test", "me", 5, 1234)
    finally:
        q.close()
        q._r.__class__.from_url(redis_url).delete("revisit:factory-test")


@pytest.mark.services
def test_kafka_url_opens_a_topic(kafka_url: str) -> None:
    from revisit.queue.kafka import KafkaQueue

    q = open_queue(kafka_url, "factory-test", group="stage", maxsize=5)
    try:
        assert isinstance(q, KafkaQueue) and isinstance(q, StageQueue)
        assert (q.topic, q.group, q.maxsize, q.name) == (
            "revisit.factory-test", "stage.factory-test", 5, "factory-test")
    finally:
        q.close()
