"""open_queue picks the backend from the URL and rejects what it cannot serve."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://localhost:6379/0?bogus=1", "unknown parameter 'bogus'"),
    ("redis://localhost:6379/0?claim_idle_ms=x", "claim_idle_ms must be an integer >= 1"),
    ("redis://localhost:6379/0?claim_idle_ms=0", "claim_idle_ms must be an integer >= 1"),
    ("redis://h:abc", "port 'abc'"),
    ("redis://h:70000/0", "port '70000'"),
    ("redis://h:6379/zero", "database number"),
    ("kafka://h1:9092,h2:x", "port 'x'"),
    ("redis://[::1", "IPv6"),
])
def test_a_bad_url_is_refused_without_connecting(url: str, problem: str) -> None:
    from revisit.queue.factory import QueueUrlError, parse_queue_url

    with pytest.raises(QueueUrlError, match=re.escape(problem)):
        parse_queue_url(url)
    with pytest.raises(ValueError, match=re.escape(problem)):
        open_queue(url, "frames")


@pytest.mark.parametrize("url", ["", "memory://", "redis://h", "redis://h:6379/3",
                                 "rediss://u:p@h:6380/0?claim_idle_ms=500",
                                 "redis://[::1]:6379/0", "kafka://h1:9092,h2:9093?partitions=2"])
def test_good_urls_parse(url: str) -> None:
    from revisit.queue.factory import parse_queue_url

    parse_queue_url(url)


def test_settings_refuse_a_bad_queue_url(tmp_path) -> None:
    from revisit.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"queue_url: .*port 'abc'.*:\*\*\*@") as info:
        load_settings(None, data=tmp_path, queue_url="redis://:secret@h:abc/0")
    assert "secret" not in str(info.value)
    assert load_settings(None, data=tmp_path, queue_url="redis://h:6379/0").queue_url
