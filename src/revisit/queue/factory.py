"""Open a stage queue from ``Settings.queue_url``.

==========================================  ================================================
``""`` or ``memory://``                     in-process bounded queue (the embedded default)
``redis://host:port/db?claim_idle_ms=60000``  Redis Streams, stream ``revisit:<name>``
``kafka://host:port[,host:port]?partitions=6``  Kafka, topic ``revisit.<name>``, group ``<group>.<name>``
==========================================  ================================================

Query parameters tune the broker backends: Redis ``claim_idle_ms`` (how long a delivered,
unacked batch waits before another consumer takes it over), ``max_deliveries``; Kafka
``partitions`` (for a topic this creates), ``session_timeout_ms``,
``max_poll_interval_ms``, ``confirm_timeout_ms``, ``max_deliveries``. Broker clients are
imported only when their scheme is used, so the embedded default needs none of them.

Kafka consumer groups are per queue (``<group>.<name>``): a group spanning several topics
would make every worker that joins one stage pause the consumers of all the others.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

from revisit.queue.base import StageQueue
from revisit.queue.memory import MemoryQueue

SCHEMES = ("memory://", "redis://", "rediss://", "kafka://")


def _int_params(query: str, allowed: set[str], url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ValueError(
                f"queue_url {url!r}: unknown parameter {key!r} (accepted: {sorted(allowed)})"
            )
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"queue_url {url!r}: {key} must be an integer") from None
    return out


def open_queue(
    url: str,
    name: str,
    *,
    group: str = "revisit",
    consumer: str | None = None,
    maxsize: int = 8,
) -> StageQueue:
    """The queue ``name`` (one per pipeline arrow) on the backend ``url`` names.

    ``group`` is the consumer group of the stage that reads the queue; ``consumer`` names
    this worker inside it (default: unique per process); ``maxsize`` bounds the queue so
    producers get back-pressure.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not url or scheme == "memory":
        return MemoryQueue(name, maxsize=maxsize)
    if scheme in ("redis", "rediss"):
        from revisit.queue.redis_streams import RedisStreamQueue

        params = _int_params(
            parts.query, {"claim_idle_ms", "max_deliveries", "forget_idle_ms"}, url)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return RedisStreamQueue(
            base, name, group=group, consumer=consumer, maxlen=maxsize, **params
        )
    if scheme == "kafka":
        from revisit.queue.kafka import KafkaQueue

        if not parts.netloc:
            raise ValueError(f"queue_url {url!r}: expected kafka://host:port[,host:port]")
        params = _int_params(
            parts.query,
            {"partitions", "session_timeout_ms", "max_poll_interval_ms", "confirm_timeout_ms",
             "max_deliveries"},
            url,
        )
        return KafkaQueue(
            parts.netloc, f"revisit.{name}", f"{group}.{name}", name=name, consumer=consumer,
            maxsize=maxsize, **params,
        )
    raise ValueError(
        f"queue_url {url!r}: unknown scheme {parts.scheme!r}; accepted: "
        f"'' (in-process), {', '.join(SCHEMES)}"
    )
