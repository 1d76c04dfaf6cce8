"""HTTP batches with a broker (Redis) and PostgreSQL: what their statuses say when the same
images are posted twice, and when the broker is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks import distributed_harness as H
from tests.distributed.test_distributed import _workers

from revisit.config import load_settings
from revisit.distributed.resolve import ResolveHandler
from revisit.ingest.status import BatchLedger, BatchStatus
from revisit.records import Batch


def _env(tmp_path: Path, queue_url: str, pg_url: str) -> Iterator:
    from tests.api.conftest import make_env

    return make_env(tmp_path, processing=False,
                    settings={"queue_url": queue_url, "store_url": pg_url})


def _items(frames: list, prefix: str) -> list[dict]:
    return [{"data": f.data, "camera_id": "camA", "ts": f.ts.isoformat(),
             "image_id": f"{prefix}-{i}"} for i, f in enumerate(frames)]


def _listed(env) -> dict[str, str]:
    page = env.client.get("/v1/batches", headers=env.auth("analyst")).json()
    return {b["batch_id"]: b["status"] for b in page["batches"]}


def test_the_same_images_posted_twice_through_the_broker_both_end_done(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Posted again before the first copy is stored (a camera's retry): both answer 202,
    the second is published too (in-flight frames are not known to the API), and it ends
    ``done`` with its frames counted as duplicates; the frames are stored once."""
    gen = _env(tmp_path, redis_url, pg_url)
    env = next(gen)
    try:
        items = _items(H.scenario(4, people=4, face_ratio=1.0, tenants=("acme",)), "dup")
        a, b = env.post_batch("cam_a", items), env.post_batch("cam_a", items)
        assert a.status_code == b.status_code == 202
        assert b.json()["status"] == "queued"  # nothing stored yet: published again
        settings = load_settings(None, data=tmp_path / "w", queue_url=redis_url,
                                 store_url=pg_url)
        with _workers(settings):
            first, second = env.wait(a.json()["batch_id"]), env.wait(b.json()["batch_id"])
        assert first["status"] == second["status"] == "done", (first, second)
        # whichever is resolved first stores the frames; the other counts them as duplicates
        stored, dup = sorted((first, second), key=lambda st: st["duplicates"])
        assert (stored["duplicates"], stored["processed"]) == (0, 4), stored
        assert stored["sightings"] > 0, stored
        assert (dup["frames"], dup["duplicates"], dup["processed"], dup["sightings"]) == (
            4, 4, 0, 0), dup
        assert env.service.runtime.store.stats("acme")["frames"] == 4
    finally:
        gen.close()


def test_resolve_counts_frames_stored_by_another_batch_as_duplicates(
    tmp_path: Path, pg_url: str
) -> None:
    """At resolve: a batch whose frames another batch stored is done (all duplicates); one
    with some of them stored is done with those counted; a redelivery of a committed batch
    keeps its counts."""
    from revisit.store.postgres_store import PostgresStore
    from revisit.vision.stages import Vision

    vision = Vision(load_settings(None, data=tmp_path / "v"))

    def batch(start: int, end: int, batch_id: str) -> Batch:
        frames = H.scenario(6, people=4, face_ratio=1.0, tenants=("acme",))[start:end]
        return vision.embed(vision.detect(Batch(batch_id, frames=frames)))

    first, again, some = batch(0, 4, "B-first"), batch(0, 4, "B-again"), batch(2, 6, "B-some")
    store = PostgresStore(pg_url)
    ledger = BatchLedger(store)
    try:
        for b in (first, again, some):
            ledger.record(BatchStatus(b.batch_id, "acme", "queued", len(b.frames)))
        handler = ResolveHandler(load_settings(None, data=tmp_path / "r", store_url=pg_url),
                                 store)
        one = handler(first)[0]
        assert ledger.get("acme", "B-first").state == "done"
        handler(again)
        st = ledger.get("acme", "B-again")
        assert (st.state, st.duplicates, st.processed, st.sightings) == ("done", 4, 0, 0)
        handler(some)
        st = ledger.get("acme", "B-some")
        assert (st.state, st.duplicates, st.processed) == ("done", 2, 2)
        before = ledger.get("acme", "B-first")
        handler(batch(0, 4, "B-first"))
        assert ledger.get("acme", "B-first") == before  # done already: counts kept
        assert before.processed == 4 and before.sightings == len(one.sightings)
        assert store.stats("acme")["frames"] == 6
    finally:
        store.close()


def test_a_batch_refused_while_the_broker_is_down_leaves_no_status(
    tmp_path: Path, pg_url: str
) -> None:
    """Redis down: 503, and ``GET /v1/batches`` shows nothing of that batch (it was not
    accepted); once Redis is back the retry is accepted."""
    redis = H.Redis(tmp_path / "redis")
    redis.start()
    gen = _env(tmp_path, redis.url, pg_url)
    env = next(gen)
    try:
        frames = H.scenario(2, people=2, face_ratio=1.0, tenants=("acme",))
        ok = env.post_batch("cam_a", _items(frames[:1], "up"))
        assert ok.status_code == 202
        redis.stop()
        down = env.post_batch("cam_a", _items(frames[1:], "down"))
        assert down.status_code == 503 and "Retry-After" in down.headers, down.text
        assert _listed(env) == {ok.json()["batch_id"]: "queued"}
        redis.start()
        retry = env.post_batch("cam_a", _items(frames[1:], "down"))
        assert retry.status_code == 202 and retry.json()["duplicates"] == 0
        assert set(_listed(env)) == {ok.json()["batch_id"], retry.json()["batch_id"]}
    finally:
        gen.close()
        redis.stop()


def _broker_errors() -> list[BaseException]:
    import redis

    errors: list[BaseException] = [redis.exceptions.ConnectionError("Connection refused"),
                                   redis.exceptions.TimeoutError("Timeout writing")]
    try:
        from confluent_kafka import KafkaError, KafkaException

        errors.append(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    except ImportError:  # pragma: no cover - only with the distributed extra
        pass
    return errors


@pytest.mark.parametrize("error", _broker_errors(), ids=lambda e: type(e).__name__)
def test_whatever_the_broker_raises_on_a_put_no_status_is_left(
    error: BaseException, tmp_path: Path, pg_url: str, redis_url: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis's connection and timeout errors, Kafka's KafkaException (a delivery the broker
    refused): the batch is not accepted, and no ``queued`` status stays behind."""
    gen = _env(tmp_path, redis_url, pg_url)
    env = next(gen)
    try:
        processor = env.service.processor

        def put(batch: Batch, timeout: float | None = None) -> None:
            raise error

        monkeypatch.setattr(processor.inbox, "put", put)
        frames = H.scenario(2, people=2, face_ratio=1.0, tenants=("acme",))[:1]
        with pytest.raises(type(error)):
            processor.submit("acme", frames)
        assert processor.recent("acme") == []
    finally:
        gen.close()
