"""Kafka specifics: offsets are committed only up to the first unacked batch, per camera
order across partitions, undecodable messages skipped."""

from __future__ import annotations

import uuid

import pytest
from tests.queue.queue_testdata import camera_batch

from revisit.queue.kafka import KafkaQueue, partition_key

pytestmark = pytest.mark.services
WAIT = 20.0


@pytest.fixture
def kq(kafka_bootstrap: str):
    topic = f"revisit.test-{uuid.uuid4().hex[:10]}"
    opened: list[KafkaQueue] = []

    def make(max_deliveries: int = 5) -> KafkaQueue:
        q = KafkaQueue(kafka_bootstrap, topic, "g", partitions=3, session_timeout_ms=1500,
                       max_deliveries=max_deliveries)
        opened.append(q)
        return q

    yield make
    for q in opened:
        q.close()


def test_partition_key_is_tenant_and_camera() -> None:
    assert partition_key(camera_batch("a", camera="cam-7", tenant="acme")) == b"acme/cam-7"
    assert partition_key(camera_batch("b", camera="cam-7", tenant="acme")) == b"acme/cam-7"


def _take(q: KafkaQueue, n: int) -> list:
    out = []
    for _ in range(n):
        d = q.get(timeout=WAIT)
        assert d is not None, f"only {len(out)} of {n}"
        out.append(d)
    return out


@pytest.mark.parametrize(
    ("acked", "redelivered"),
    [({1, 2}, ["b0", "b1", "b2"]), ({0, 1}, ["b2"]), ({0, 2}, ["b1", "b2"])],
)
def test_only_contiguous_acks_are_committed(kq, acked: set[int], redelivered: list[str]) -> None:
    producer = kq()
    for i in range(3):
        producer.put(camera_batch(f"b{i}"), timeout=10)
    first = kq()
    ds = _take(first, 3)
    assert [d.batch.batch_id for d in ds] == ["b0", "b1", "b2"]
    for i in sorted(acked):
        ds[i].ack()
    assert producer.depth() == len(redelivered)
    first.close()  # crash: what was not committed comes back, in order
    second = kq()
    ds2 = _take(second, len(redelivered))
    assert [d.batch.batch_id for d in ds2] == redelivered
    for d in ds2:
        d.ack()
    assert second.get(timeout=1.0) is None
    assert producer.depth() == 0


def test_order_is_kept_per_camera(kq) -> None:
    producer = kq()
    for i in range(4):
        for cam in ("cam-a", "cam-b", "cam-c"):
            producer.put(camera_batch(f"{cam}/{i}", camera=cam), timeout=10)
    consumer = kq()
    seen: dict[str, list[int]] = {}
    for d in _take(consumer, 12):
        cam, i = d.batch.batch_id.split("/")
        seen.setdefault(cam, []).append(int(i))
        d.ack()
    assert seen == {c: [0, 1, 2, 3] for c in ("cam-a", "cam-b", "cam-c")}


def test_undecodable_message_is_moved_aside(kq, kafka_bootstrap: str) -> None:
    from confluent_kafka import Producer

    producer = kq()
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    raw.produce(producer.topic, key=b"t1/cam-1", value=b"\x80\x04garbage")
    raw.flush(10)
    producer.put(camera_batch("good"), timeout=10)
    d = kq().get(timeout=WAIT)
    assert d is not None and d.batch.batch_id == "good"
    d.ack()
    assert producer.depth() == 0  # the garbage offset was committed too
    assert producer.dead_letters() == 1


def test_poison_batch_is_dead_lettered_after_max_deliveries(kq) -> None:
    """A batch its workers keep failing on (no ack, the consumer closed and reopened each
    time, as the worker loop does) is moved aside after ``max_deliveries`` and the batches
    behind it flow; replayed (after fixing its cause), it is delivered again, once."""
    producer = kq()
    producer.put(camera_batch("poison"), timeout=10)
    producer.put(camera_batch("good"), timeout=10)
    for _ in range(2):  # delivered, the worker fails and reconnects
        worker = kq(max_deliveries=2)
        d = worker.get(timeout=WAIT)
        assert d is not None and d.batch.batch_id == "poison"
        worker.close()
    worker = kq(max_deliveries=2)
    told: list[tuple[str, str]] = []  # the worker's batch statuses hear of it
    worker.on_dead = lambda b, why: told.append((b.batch_id, why))
    d = worker.get(timeout=WAIT)  # the third delivery goes aside, the next batch comes
    assert d is not None and d.batch.batch_id == "good"
    assert [t for t, _ in told] == ["poison"] and "too many" in told[0][1]
    d.ack()
    assert producer.depth() == 0 and producer.dead_letters() == 1
    assert producer.status() == {"waiting": 0, "dead_letters": 1}
    worker.close()
    assert producer.replay_dead() == 1
    assert producer.dead_letters() == 0 and producer.replay_dead() == 0
    fixed = kq(max_deliveries=2)
    d = fixed.get(timeout=WAIT)
    assert d is not None and d.batch.batch_id == "poison"
    d.ack()
    assert fixed.get(timeout=1.0) is None and producer.depth() == 0


def test_the_dead_topic_keeps_its_letters_for_a_while_only(kq, kafka_bootstrap: str) -> None:
    """Dead letters hold snapshots: the dead topic is made with a retention."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from revisit.queue.base import DEAD_LETTER_DAYS

    q = kq()
    q._ensure_topic(1, q.dead_topic)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, q.dead_topic)
    configs = admin.describe_configs([res])[res].result(timeout=15)
    assert configs["retention.ms"].value == str(DEAD_LETTER_DAYS * 86_400_000)
