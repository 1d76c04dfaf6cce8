"""Redis Streams specifics: claiming a dead consumer's batches, restart under the same
name, dead-lettering of poison and garbage, namespacing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from tests.queue.queue_testdata import camera_batch

from revisit.queue import redis_streams
from revisit.queue.redis_streams import RedisStreamQueue

pytestmark = pytest.mark.services

redis = pytest.importorskip("redis")


@pytest.fixture
def rq(redis_url: str) -> Iterator:
    name = f"test-{uuid.uuid4().hex[:10]}"
    opened: list[RedisStreamQueue] = []

    def make(consumer: str, **kw) -> RedisStreamQueue:
        kw.setdefault("claim_idle_ms", 300)
        q = RedisStreamQueue(redis_url, name, group="g", consumer=consumer, **kw)
        opened.append(q)
        return q

    make.name = name  # type: ignore[attr-defined]
    yield make
    for q in opened:
        q.close()
    r = redis.Redis.from_url(redis_url)
    r.delete(f"revisit:{name}", f"revisit:{name}:dead", f"revisit:{name}:alive:g")


def test_stream_is_namespaced(rq, redis_url: str) -> None:
    q = rq("p")
    q.put(camera_batch("b0"))
    r = redis.Redis.from_url(redis_url)
    assert r.xlen(f"revisit:{rq.name}") == 1


def test_dead_consumer_batch_is_claimed_only_after_idle_timeout(rq) -> None:
    producer, dead, live = rq("p"), rq("dead"), rq("live")
    producer.put(camera_batch("b0"))
    d = dead.get(timeout=2)
    assert d is not None  # ...and the consumer hangs forever without acking or closing
    t0 = time.monotonic()
    assert live.get(timeout=0.1) is None  # not idle long enough yet: no double delivery
    d2 = live.get(timeout=5)
    assert d2 is not None and d2.batch.batch_id == "b0"
    assert time.monotonic() - t0 >= 0.15
    d2.ack()
    d.ack()  # the zombie's late ack is harmless
    assert producer.depth() == 0


def test_restart_under_same_name_gets_own_pending_at_once(rq) -> None:
    producer = rq("p")
    for i in range(2):
        producer.put(camera_batch(f"b{i}"))
    first = rq("worker-1", claim_idle_ms=3_600_000)
    assert first.get(timeout=2).batch.batch_id == "b0"  # crashes before acking
    again = rq("worker-1", claim_idle_ms=3_600_000)  # restarted process, same name
    t0 = time.monotonic()
    d = again.get(timeout=2)
    assert d is not None and d.batch.batch_id == "b0"
    assert time.monotonic() - t0 < 1.0  # did not wait for the claim timeout
    d.ack()
    d = again.get(timeout=2)
    assert d is not None and d.batch.batch_id == "b1"  # then new work, and b0 only once
    d.ack()
    assert again.get(timeout=0.3) is None


def test_poison_batch_is_dead_lettered_after_max_deliveries(rq, redis_url: str) -> None:
    producer = rq("p", max_deliveries=1)
    producer.put(camera_batch("poison"))
    assert rq("w1", max_deliveries=1).get(timeout=2) is not None  # worker 1 dies on it
    w2 = rq("w2", max_deliveries=1)
    told: list[tuple[str, str]] = []  # the worker's batch statuses hear of it
    w2.on_dead = lambda b, why: told.append((b.batch_id, why))
    assert w2.get(timeout=1.5) is None  # claimed, but delivered too often: moved aside
    assert [t for t, _ in told] == ["poison"] and "too many" in told[0][1]
    r = redis.Redis.from_url(redis_url)
    dead = r.xrange(f"revisit:{rq.name}:dead")
    assert len(dead) == 1 and b"too many" in dead[0][1][b"reason"]
    assert producer.depth() == 0
    # the cause fixed, `revisit admin replay-dead` puts it back in line, once
    assert producer.dead_letters() == 1
    assert producer.replay_dead() == 1
    assert producer.dead_letters() == 0 and producer.depth() == 1
    d = rq("w3", max_deliveries=5).get(timeout=2)
    assert d is not None and d.batch.batch_id == "poison"
    d.ack()


def test_poison_batch_is_dead_lettered_for_a_worker_restarted_under_its_name(
        rq, redis_url: str) -> None:
    producer = rq("p", max_deliveries=2)
    producer.put(camera_batch("poison"))
    for _ in range(2):  # the worker dies on it and comes back as "w"
        assert rq("w", max_deliveries=2).get(timeout=2) is not None
    assert rq("w", max_deliveries=2).get(timeout=1) is None  # its third delivery: aside
    r = redis.Redis.from_url(redis_url)
    dead = r.xrange(f"revisit:{rq.name}:dead")
    assert len(dead) == 1 and b"too many" in dead[0][1][b"reason"]


def test_garbage_payload_is_dead_lettered_not_delivered(rq, redis_url: str) -> None:
    producer = rq("p")
    r = redis.Redis.from_url(redis_url)
    r.xadd(f"revisit:{rq.name}", {"b": b"\x80\x04not msgpack"})
    producer.put(camera_batch("good"))
    d = rq("w").get(timeout=2)
    assert d is not None and d.batch.batch_id == "good"
    d.ack()
    dead = r.xrange(f"revisit:{rq.name}:dead")
    assert len(dead) == 1 and dead[0][1][b"b"] == b"\x80\x04not msgpack"
    assert producer.depth() == 0


def test_close_leaves_group_only_without_pending(rq, redis_url: str) -> None:
    producer, holder, idle = rq("p"), rq("holder"), rq("idle")
    producer.put(camera_batch("b0"))
    assert holder.get(timeout=2) is not None
    assert idle.get(timeout=0.05) is None
    holder.close()
    idle.close()
    r = redis.Redis.from_url(redis_url)
    names = {c["name"] for c in r.xinfo_consumers(f"revisit:{rq.name}", "g")}
    assert b"holder" in names and b"idle" not in names


def test_idle_consumers_holding_nothing_are_forgotten(rq, redis_url: str, monkeypatch) -> None:
    monkeypatch.setattr(redis_streams, "LIVE_IDLE_MS", 300)  # "gone" stops asking: dead soon
    producer = rq("p")
    producer.put(camera_batch("b0"))
    gone = rq("gone", forget_idle_ms=200)
    d = gone.get(timeout=2)
    d.ack()  # holds nothing now, and never comes back
    holder = rq("holder", forget_idle_ms=200, claim_idle_ms=3_600_000)
    producer.put(camera_batch("b1"))
    assert holder.get(timeout=2) is not None  # unacked: it must stay listed
    time.sleep(0.4)
    live = rq("live", forget_idle_ms=200, claim_idle_ms=3_600_000)
    assert live.get(timeout=0.5) is None  # its claim scan finds nothing to take, then prunes
    r = redis.Redis.from_url(redis_url)
    names = {c["name"].decode() for c in r.xinfo_consumers(f"revisit:{rq.name}", "g")}
    assert "gone" not in names and "holder" in names and "live" in names


def test_dead_letters_older_than_the_keep_period_go(rq, redis_url: str) -> None:
    """Dead letters hold snapshots: those older than DEAD_LETTER_DAYS are dropped."""
    import time

    from revisit.queue.base import DEAD_LETTER_DAYS

    producer = rq("p")
    r = redis.Redis.from_url(redis_url)
    old_ms = int((time.time() - DEAD_LETTER_DAYS * 86400 - 3600) * 1000)
    r.xadd(f"revisit:{rq.name}:dead", {b"reason": b"old"}, id=f"{old_ms}-0")
    r.xadd(f"revisit:{rq.name}:dead", {b"reason": b"recent"})
    assert producer.dead_letters() == 1
    assert [f[b"reason"] for _, f in r.xrange(f"revisit:{rq.name}:dead")] == [b"recent"]


def test_a_batch_set_aside_by_a_stage_is_replayed_like_any_dead_letter(rq) -> None:
    from revisit.queue.codec import encode_batch

    producer = rq("p")
    producer.put_dead(encode_batch(camera_batch("parked")), "cannot be applied")
    assert producer.dead_letters() == 1 and producer.replay_dead() == 1
    d = rq("w").get(timeout=2)
    assert d is not None and d.batch.batch_id == "parked"
    d.ack()


def _listed(redis_url: str, name: str) -> set[str]:
    r = redis.Redis.from_url(redis_url)
    return {c["name"].decode() for c in r.xinfo_consumers(f"revisit:{name}", "g")}


def test_a_live_consumer_that_finds_no_work_counts_as_live(rq, monkeypatch) -> None:
    """Before Redis 7.2 XINFO's idle grows while a consumer's reads find nothing (7.0
    does not even list a consumer that never got an entry): status must still count a
    worker that keeps asking, and stop counting one that stopped."""
    monkeypatch.setattr(redis_streams, "LIVE_IDLE_MS", 600)
    producer, idle = rq("p"), rq("idle")
    producer.put(camera_batch("b0"))
    idle.get(timeout=2).ack()  # listed in the group now, holding nothing
    assert idle.get(timeout=1.5) is None  # asked for 1.5 s (> LIVE_IDLE_MS), found nothing
    assert producer.status()["consumers"] == 1
    time.sleep(0.9)  # stops asking (a killed worker)
    assert producer.status()["consumers"] == 0
    fresh = rq("fresh")
    assert fresh.get(timeout=0.8) is None  # never got an entry
    assert producer.status()["consumers"] == 1
    fresh.close()  # a clean exit
    assert producer.status()["consumers"] == 0


def test_a_live_idle_consumer_is_never_forgotten(rq, redis_url: str, monkeypatch) -> None:
    """Pruning (DELCONSUMER) must not drop a consumer that is still asking for work,
    however long its reads have found nothing."""
    monkeypatch.setattr(redis_streams, "LIVE_IDLE_MS", 5_000)
    producer = rq("p")
    producer.put(camera_batch("b0"))
    idle = rq("idle", forget_idle_ms=200)
    idle.get(timeout=2).ack()
    assert idle.get(timeout=0.6) is None  # XINFO idle now > forget_idle_ms on Redis 7.0
    pruner = rq("pruner", forget_idle_ms=200, claim_idle_ms=3_600_000)
    assert pruner.get(timeout=0.5) is None  # scans, finds nothing to claim, prunes
    assert "idle" in _listed(redis_url, rq.name)


def test_pruning_never_drops_a_consumer_holding_entries(rq, redis_url: str,
                                                        monkeypatch) -> None:
    """The consumer list read before DELCONSUMER can be stale (the consumer took an
    entry meanwhile): deleting it then would drop its pending entry for good."""
    monkeypatch.setattr(redis_streams, "LIVE_IDLE_MS", 100)
    producer = rq("p")
    producer.put(camera_batch("b0"))
    holder = rq("holder", claim_idle_ms=3_600_000)
    assert holder.get(timeout=2) is not None  # holds b0, then hangs
    time.sleep(0.3)
    pruner = rq("pruner", forget_idle_ms=200, claim_idle_ms=3_600_000)
    stale = [{"name": b"holder", "pending": 0, "idle": 10_000_000}]
    monkeypatch.setattr(pruner._r, "xinfo_consumers", lambda *a, **k: stale)
    pruner._prune(time.monotonic())
    assert "holder" in _listed(redis_url, rq.name)
    assert producer.status()["in_flight"] == 1


def test_the_retention_purge_trims_every_stage_queues_dead_letters(
        redis_url: str, tmp_path, monkeypatch) -> None:
    """On a quiet system no letter is added and nobody runs `revisit status`: the purge
    (`revisit admin purge`, and the server's scheduled one) trims them."""
    import time

    from typer.testing import CliRunner

    from revisit.cli.main import app
    from revisit.distributed.topology import QUEUE_IN
    from revisit.queue.base import DEAD_LETTER_DAYS

    url = redis_url.rsplit("/", 1)[0] + "/13"  # a database of its own
    r = redis.Redis.from_url(url)
    r.flushdb()
    old_ms = int((time.time() - DEAD_LETTER_DAYS * 86400 - 3600) * 1000)
    for name in QUEUE_IN.values():
        r.xadd(f"revisit:{name}:dead", {b"reason": b"old"}, id=f"{old_ms}-0")
        r.xadd(f"revisit:{name}:dead", {b"reason": b"recent"})
    monkeypatch.setenv("REVISIT_QUEUE_URL", url)
    try:
        out = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), "admin", "purge"])
        assert out.exit_code == 0, out.output
        for name in QUEUE_IN.values():
            left = [f[b"reason"] for _, f in r.xrange(f"revisit:{name}:dead")]
            assert left == [b"recent"], name
    finally:
        r.flushdb()


def _dead_letter(r, key: str, batch_id: str, frames: list[tuple[str, int]]) -> None:
    """A dead letter written now holding one frame per ``(tenant, age in days)``."""
    from datetime import UTC, datetime, timedelta

    from revisit.queue.codec import encode_batch
    from revisit.records import Batch, Frame

    now = datetime.now(UTC)
    batch = Batch(batch_id, frames=[
        Frame(t, "cam", "loc", f"{batch_id}-{i}", now - timedelta(days=days), data=b"jpeg")
        for i, (t, days) in enumerate(frames)])
    r.xadd(key, {b"b": encode_batch(batch), b"reason": b"too many", b"id": b"0-1"})


@pytest.mark.parametrize("via", ["cli", "server"])
def test_the_retention_purge_drops_dead_letters_past_their_tenants_retention(
        via: str, redis_url: str, tmp_path, monkeypatch) -> None:
    """A dead letter holds a tenant's snapshots: it goes with the tenant's retention (a
    7-day tenant's letters once every frame is older than 7 days), not after 30 days;
    a letter holding several tenants goes with the strictest; one that does not decode
    waits for the fixed age. `revisit admin purge` and the server's purge alike."""
    from typer.testing import CliRunner

    from revisit.api.service import Service
    from revisit.api.settings import ServiceSettings
    from revisit.cli.main import app
    from revisit.config import load_settings
    from revisit.distributed.topology import QUEUE_IN
    from revisit.queue.codec import decode_batch

    url = redis_url.rsplit("/", 1)[0] + "/12"  # a database of its own
    r = redis.Redis.from_url(url)
    r.flushdb()
    data = ["--data", str(tmp_path / "d")]
    runner = CliRunner()
    for tenant, days in (("week", 7), ("year", 365)):
        out = runner.invoke(app, [*data, "admin", "add-tenant", tenant,
                                  "--retention-days", str(days)])
        assert out.exit_code == 0, out.output
    key = f"revisit:{QUEUE_IN['resolve']}:dead"
    _dead_letter(r, key, "week-old", [("week", 9), ("week", 8)])
    _dead_letter(r, key, "week-mixed", [("week", 9), ("week", 1)])
    _dead_letter(r, key, "year-old", [("year", 9)])
    _dead_letter(r, key, "both-old", [("year", 9), ("week", 8)])
    _dead_letter(r, key, "week-old-year-new", [("week", 8), ("year", 0)])
    r.xadd(key, {b"b": b"\x80not a batch", b"reason": b"undecodable", b"id": b"0-2"})
    monkeypatch.setenv("REVISIT_QUEUE_URL", url)
    try:
        if via == "cli":
            out = runner.invoke(app, [*data, "admin", "purge"])
            assert out.exit_code == 0, out.output
        else:
            svc = Service(load_settings(None, data=tmp_path / "d"),
                          ServiceSettings(purge_interval_s=0))
            try:
                svc.purge_all("test")
            finally:
                svc.stop()
        left = [f[b"b"] for _, f in r.xrange(key)]
        assert len(left) == 3
        assert [decode_batch(b).batch_id for b in left[:2]] == ["week-mixed", "year-old"]
        assert left[2] == b"\x80not a batch"
    finally:
        r.flushdb()
