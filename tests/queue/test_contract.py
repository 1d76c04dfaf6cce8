"""The queue contract (revisit.queue.base): every backend offered passes all of it.

Memory is the in-process default: it has no consumers to lose, so the redelivery tests are
skipped for it (documented: crash safety there comes from the store).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from tests.queue.queue_testdata import QueueMaker, camera_batch, full_batch

from revisit.queue.base import QueueFull, StageQueue

# Long enough for a Kafka consumer group to (re)balance on Tansu, or a Redis claim.
WAIT = 20.0


def drain(q: StageQueue, timeout: float = 1.0) -> list[str]:
    """Get and ack everything until ``timeout`` passes with nothing new."""
    ids = []
    while (d := q.get(timeout=timeout)) is not None:
        ids.append(d.batch.batch_id)
        d.ack()
    return ids


def needs_redelivery(make_queue: QueueMaker) -> None:
    if make_queue.backend == "memory":  # type: ignore[attr-defined]
        pytest.skip("the in-process queue does not redeliver (nothing outlives the process)")


def test_put_get_keeps_order_per_producer(make_queue: QueueMaker) -> None:
    producer, consumer = make_queue(), make_queue(consumer="c1")
    ids = [f"b{i}" for i in range(6)]
    for i in ids:
        producer.put(camera_batch(i), timeout=10)
    got = []
    for _ in ids:
        d = consumer.get(timeout=WAIT)
        assert d is not None, f"only got {got}"
        got.append(d.batch.batch_id)
        d.ack()
    assert got == ids
    assert consumer.get(timeout=0.5) is None


def test_get_returns_none_after_timeout(make_queue: QueueMaker) -> None:
    q = make_queue(consumer="c1")
    t0 = time.monotonic()
    assert q.get(timeout=0.3) is None
    assert time.monotonic() - t0 >= 0.29


def test_batch_round_trips_through_the_queue(make_queue: QueueMaker) -> None:
    producer, consumer = make_queue(), make_queue(consumer="c1")
    src = full_batch()
    producer.put(src, timeout=10)
    d = consumer.get(timeout=WAIT)
    assert d is not None
    out = d.batch
    d.ack()
    assert out.batch_id == src.batch_id
    assert [f.data for f in out.frames] == [f.data for f in src.frames]
    assert [f.ts for f in out.frames] == [f.ts for f in src.frames]
    assert np.array_equal(out.faces[0].crop, src.faces[0].crop)
    assert out.faces[0].crop.dtype == np.uint8
    assert np.array_equal(out.faces[0].embedding, src.faces[0].embedding)
    assert out.faces[1].crop is None and out.faces[1].embedding is None
    assert [s.face_id for s in out.sightings] == [s.face_id for s in src.sightings]
    assert out.rejected == src.rejected
    assert out.visitors_created == src.visitors_created
    assert out.exemplars_dropped == src.exemplars_dropped


def test_bounded_queue_applies_back_pressure(make_queue: QueueMaker) -> None:
    producer, consumer = make_queue(maxsize=2), make_queue(consumer="c1", maxsize=2)
    producer.put(camera_batch("b0"), timeout=10)
    producer.put(camera_batch("b1"), timeout=10)
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        producer.put(camera_batch("b2"), timeout=0.3)
    assert time.monotonic() - t0 >= 0.29  # it waited for room before giving up
    d = consumer.get(timeout=WAIT)
    assert d is not None and d.batch.batch_id == "b0"
    d.ack()  # frees one place
    producer.put(camera_batch("b2"), timeout=10)
    assert drain(consumer) == ["b1", "b2"]


def test_depth_counts_waiting_and_unacked(make_queue: QueueMaker) -> None:
    producer, consumer = make_queue(), make_queue(consumer="c1")
    assert producer.depth() == 0
    for i in range(3):
        producer.put(camera_batch(f"b{i}"), timeout=10)
    assert producer.depth() == 3
    d = consumer.get(timeout=WAIT)
    assert d is not None
    # Brokers count the delivered-but-unacked batch (it may come back); memory does not.
    assert producer.depth() == (2 if make_queue.backend == "memory" else 3)  # type: ignore[attr-defined]
    d.ack()
    assert producer.depth() == 2
    assert len(drain(consumer)) == 2
    assert producer.depth() == 0


def test_unacked_batch_goes_to_another_consumer(make_queue: QueueMaker) -> None:
    needs_redelivery(make_queue)
    producer = make_queue()
    producer.put(camera_batch("lost"), timeout=10)
    first = make_queue(consumer="dies")
    d = first.get(timeout=WAIT)
    assert d is not None and d.batch.batch_id == "lost"
    first.close()  # dies without acking
    second = make_queue(consumer="survivor")
    d2 = second.get(timeout=WAIT)
    assert d2 is not None and d2.batch.batch_id == "lost"
    d2.ack()
    assert second.get(timeout=1.0) is None
    assert producer.depth() == 0


def test_acked_batch_is_not_redelivered(make_queue: QueueMaker) -> None:
    producer = make_queue()
    producer.put(camera_batch("done"), timeout=10)
    first = make_queue(consumer="c1")
    d = first.get(timeout=WAIT)
    assert d is not None
    d.ack()
    first.close()
    second = make_queue(consumer="c2")
    assert second.get(timeout=2.0) is None


def test_two_consumers_share_work_without_duplicates(make_queue: QueueMaker) -> None:
    producer = make_queue(maxsize=100)
    consumers = [make_queue(consumer=f"w{i}", maxsize=100) for i in range(2)]
    got: list[list[str]] = [[], []]
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            while not stop.is_set():
                d = consumers[i].get(timeout=0.2)
                if d is not None:
                    got[i].append(d.batch.batch_id)
                    time.sleep(0.02)  # "processing", so the other worker gets a turn
                    d.ack()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    if make_queue.backend == "kafka":  # type: ignore[attr-defined]
        time.sleep(5)  # let both join the group and split the partitions
    ids = [f"b{i:02d}" for i in range(24)]
    for i, bid in enumerate(ids):
        producer.put(camera_batch(bid, camera=f"cam-{i}"), timeout=10)
    deadline = time.monotonic() + 30
    while len(got[0]) + len(got[1]) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # a duplicate would arrive now
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors, errors
    everything = got[0] + got[1]
    assert sorted(everything) == ids, "lost or duplicated batches"
    assert got[0] and got[1], f"one consumer did all the work: {len(got[0])}/{len(got[1])}"
