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


_REDIS_PARAMS = frozenset({"claim_idle_ms", "max_deliveries", "forget_idle_ms"})
_KAFKA_PARAMS = frozenset({"partitions", "session_timeout_ms", "max_poll_interval_ms",
                           "confirm_timeout_ms", "max_deliveries"})


class QueueUrlError(ValueError):
    """A queue URL that cannot be used; ``problem`` says why (without the URL)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"queue_url {redact_url(url)!r}: {problem}")
        self.problem = problem


def redact_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def _int_params(query: str, allowed: frozenset[str], url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise QueueUrlError(url, f"unknown parameter {key!r} (accepted: {sorted(allowed)})")
        try:
            out[key] = int(value)
        except ValueError:
            raise QueueUrlError(url, f"{key} must be an integer >= 1, not {value!r}") from None
        if out[key] < 1:
            raise QueueUrlError(url, f"{key} must be an integer >= 1, not {value!r}")
    return out


def _port(netloc: str, url: str) -> None:
    """Refuse a ``host:port`` whose port is not a number in 1-65535."""
    _host, sep, port = netloc.rpartition("@")[2].rpartition(":")
    if not sep or not port or port.endswith("]"):  # no port (or an IPv6 address alone)
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise QueueUrlError(url, f"port {port!r} is not a number in 1-65535")


def parse_queue_url(url: str) -> tuple[str, str, dict[str, int]]:
    """``(scheme, address, parameters)`` of a queue URL, checked without connecting: an
    unknown scheme or parameter, a parameter that is not an integer >= 1, a bad
    port or Redis database raise :class:`QueueUrlError` naming the problem. ``address`` is the Redis
    URL without the query, or Kafka's ``host:port[,host:port]`` list."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in an IPv6 host
        raise QueueUrlError(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if not url or scheme == "memory":
        return "memory", "", {}
    if scheme in ("redis", "rediss"):
        params = _int_params(parts.query, _REDIS_PARAMS, url)
        _port(parts.netloc, url)
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise QueueUrlError(url, "the path must be a database number "
                                     f"(redis://host:port/0), not {parts.path!r}")
        return scheme, urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), params
    if scheme == "kafka":
        if not parts.netloc:
            raise QueueUrlError(url, "expected kafka://host:port[,host:port]")
        params = _int_params(parts.query, _KAFKA_PARAMS, url)
        for server in parts.netloc.split(","):
            _port(server, url)
        return scheme, parts.netloc, params
    raise QueueUrlError(
        url, f"unknown scheme {parts.scheme!r}; accepted: '' (in-process), {', '.join(SCHEMES)}"
    )


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
    scheme, address, params = parse_queue_url(url)
    if scheme == "memory":
        return MemoryQueue(name, maxsize=maxsize)
    if scheme in ("redis", "rediss"):
        from revisit.queue.redis_streams import RedisStreamQueue

        return RedisStreamQueue(
            address, name, group=group, consumer=consumer, maxlen=maxsize, **params
        )
    from revisit.queue.kafka import KafkaQueue

    return KafkaQueue(
        address, f"revisit.{name}", f"{group}.{name}", name=name, consumer=consumer,
        maxsize=maxsize, **params,
    )
