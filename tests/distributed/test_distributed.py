"""Distributed mode on real engines: Redis Streams / Kafka + PostgreSQL, real faces.

- workers over a broker give the same sightings and report as the embedded default;
- resolvers running at once never create two visitors for one person;
- redelivered and out-of-order batches change nothing (replay, reorder buffer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from benchmarks import distributed_harness as H

from revisit.config import load_settings
from revisit.distributed.metrics import WorkerMetrics
from revisit.distributed.publish import ingest_frames
from revisit.distributed.resolve import ResolveHandler
from revisit.distributed.worker import Worker
from revisit.pipeline import Runtime
from revisit.records import Batch

TENANTS = ("default", "acme")


@contextlib.contextmanager
def _workers(settings: object, per_stage: int = 1,
             metrics: dict[str, WorkerMetrics] | None = None) -> Iterator[None]:
    """One worker (``per_stage`` threads) per stage, in threads, stopped on exit."""
    metrics = {} if metrics is None else metrics
    workers = [Worker(settings, stage, concurrency=per_stage,  # type: ignore[arg-type]
                      metrics=metrics.setdefault(stage, WorkerMetrics(stage)))
               for stage in ("detect", "embed", "resolve", "store")]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for w in workers:
            w.stop.set()
        for t in threads:
            t.join(timeout=30)


def _queue_url(broker: str, request: pytest.FixtureRequest) -> str:
    if broker == "redis":
        return request.getfixturevalue("redis_url")
    return (f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
            "?partitions=2&session_timeout_ms=1500")


def _embedded(tmp_path: Path, frames: list) -> dict:
    rt = Runtime(load_settings(None, data=tmp_path / "embedded"))
    try:
        rt.ingest(iter(frames))
        return H.snapshot(rt.store, TENANTS)
    finally:
        rt.close()


def _distributed(tmp_path: Path, frames: list, queue_url: str, store_url: str,
                 per_stage: int = 2) -> dict:
    from revisit.store.postgres_store import PostgresStore

    settings = load_settings(None, data=tmp_path / "dist", queue_url=queue_url,
                             store_url=store_url)
    rt = Runtime(settings)
    store = PostgresStore(store_url)
    metrics: dict[str, WorkerMetrics] = {}
    try:
        with _workers(settings, per_stage, metrics):
            summary = ingest_frames(rt, iter(frames))  # publishes, then follows them
            assert summary.frames == len(frames) and summary.sightings > 0
            assert sum(store.stats(t)["frames"] for t in TENANTS) == len(frames)
            time.sleep(1.0)  # let the store stage ack its last batches
            # each worker's own metrics, as a scraper reads them (--metrics-port)
            port = H.free_port()
            metrics["detect"].serve(port)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10
                                          ).read().decode()
            # (at least once: a batch redelivered under load counts again)
            scraped = re.search(r'^revisit_worker_frames_total\{stage="detect"\} (\S+)$', text,
                                re.M)
            assert scraped and float(scraped.group(1)) >= len(frames)
            assert 'revisit_worker_threads{stage="detect"} 2.0' in text
            for stage in ("embed", "resolve", "store"):
                read = metrics[stage].registry.get_sample_value
                assert read("revisit_worker_frames_total", {"stage": stage}) >= len(frames)
                assert read("revisit_worker_batches_total", {"stage": stage}) >= 1
        H.consolidate_all(store, store_url, TENANTS)  # the embedded default does it at the end
        return H.snapshot(store, TENANTS)
    finally:
        rt.close()
        store.close()


@pytest.mark.parametrize("broker", ["redis", "kafka"])
def test_workers_give_the_embedded_report(
    broker: str, tmp_path: Path, pg_url: str, request: pytest.FixtureRequest
) -> None:
    frames = H.scenario(96, people=20, face_ratio=0.7)
    queue_url = _queue_url(broker, request)
    want = _embedded(tmp_path, frames)
    got = _distributed(tmp_path, H.scenario(96, people=20, face_ratio=0.7), queue_url, pg_url)
    assert sum(len(want[t]["sightings"]) for t in TENANTS) > 30  # real faces were found
    assert H.diff(want, got) == {}


def _embedded_batches(tmp_path: Path, frames: list, size: int) -> list[Batch]:
    """Frames through the real detector and embedder, as the resolve queue would carry them."""
    from revisit.vision.stages import Vision

    vision = Vision(load_settings(None, data=tmp_path / "v"))
    return [vision.embed(vision.detect(Batch(f"b{i}", frames=frames[i:i + size])))
            for i in range(0, len(frames), size)]


def _same_person_frames(n: int) -> list:
    """``n`` frames of two LFW people (photos reused under distinct image ids)."""
    frames = H.scenario(400, people=2, face_ratio=1.0, tenants=("default",))
    return frames[:n]


def test_concurrent_resolvers_create_one_visitor(tmp_path: Path, pg_url: str) -> None:
    from revisit.store.postgres_store import PostgresStore

    frames = _same_person_frames(400)
    # two frames of the same person, each alone in a batch, resolved at the same instant
    by_person: dict[bytes, list] = {}
    for f in frames:
        by_person.setdefault(f.data, []).append(f)
    first_photo = next(iter(by_person.values()))
    batches = _embedded_batches(tmp_path, first_photo[:2], 1)
    assert all(len(b.faces) >= 1 for b in batches)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    stores = [PostgresStore(pg_url) for _ in batches]
    handlers = [ResolveHandler(settings, s) for s in stores]
    barrier = threading.Barrier(len(handlers))
    out: list[list[Batch]] = [[] for _ in handlers]

    def go(i: int) -> None:
        handlers[i].store.max_visitor_number("default")  # warm the connection
        barrier.wait()
        out[i] = handlers[i](batches[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(handlers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the same photo twice: whichever resolver went second matched every face the first
    # one created (without the tenant lock both would have created them all)
    creatable = sum(f.creatable for f in batches[0].faces)
    assert creatable >= 1
    per_batch = [sorted(s.face_id for b in o for s in b.sightings) for o in out]
    assert per_batch[0] == per_batch[1]
    created = [v for o in out for b in o for v in b.visitors_created]
    assert len(created) == creatable
    assert stores[0].max_visitor_number("default") == creatable
    for s in stores:
        s.close()


def test_out_of_order_and_redelivered_batches(tmp_path: Path, pg_url: str) -> None:
    """Batches of one stream arriving 2, 0, 2 (again), 1 at two resolvers end up exactly as
    resolving 0, 1, 2 in order once: same visitors, nothing doubled."""
    from revisit.store.postgres_store import PostgresStore

    def stamped() -> list[Batch]:  # detection releases frame bytes: fresh frames each time
        frames = H.scenario(48, people=6, face_ratio=0.9, tenants=("default",))
        bs = _embedded_batches(tmp_path, frames, 16)
        for i, b in enumerate(bs):
            b.batch_id = f"s-test#{i:09d}"
        return bs

    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    ordered_url = pg_url.replace("?schema=", "?schema=o")
    ref_store = PostgresStore(ordered_url)
    ref = ResolveHandler(settings, ref_store)
    for b in stamped():
        ref(b)
    want = H.snapshot(ref_store, ("default",))
    ref_store.drop_schema()
    ref_store.close()

    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    ra, rb = ResolveHandler(settings, a), ResolveHandler(settings, b)
    bs = stamped()
    assert ra(bs[2]) == []  # early: parked
    first = rb(bs[0])
    assert [x.batch_id for x in first] == ["s-test#000000000"]
    assert ra(stamped()[2]) == []  # redelivered while still parked
    applied = rb(bs[1])  # its predecessor arrives: 1 and the parked 2 are applied
    assert [x.batch_id for x in applied] == ["s-test#000000001", "s-test#000000002"]
    replay = ra(stamped()[0])  # a redelivery of a committed batch: stored answer
    assert sorted((s.face_image_id, s.face_id) for s in replay[0].sightings) == sorted(
        (s.face_image_id, s.face_id) for s in first[0].sightings)
    assert replay[0].visitors_created == []
    got = H.snapshot(a, ("default",))
    assert H.diff(want, got) == {}
    assert a.parked_streams() == []
    assert want["default"]["header"][0] >= 3
    a.close()
    b.close()


def test_pgvector_index_gives_the_faiss_decisions(tmp_path: Path, pg_url: str) -> None:
    """Two resolvers alternating over one stream with the shared pgvector index decide
    exactly as one resolver with faiss; exemplars enter the index in the store's commit."""
    from revisit.store.postgres_store import PostgresStore

    def stamped() -> list[Batch]:
        frames = H.scenario(48, people=6, face_ratio=0.9, tenants=("default",))
        bs = _embedded_batches(tmp_path, frames, 12)
        for i, b in enumerate(bs):
            b.batch_id = f"s-pgv#{i:09d}"
        return bs

    faiss_url = pg_url.replace("?schema=", "?schema=f")
    ref_store = PostgresStore(faiss_url)
    ref = ResolveHandler(load_settings(None, data=tmp_path / "f", store_url=faiss_url), ref_store)
    for b in stamped():
        ref(b)
    want = H.snapshot(ref_store, ("default",))
    ref_store.drop_schema()
    ref_store.close()

    settings = load_settings(None, data=tmp_path / "p", store_url=pg_url,
                             index_url="pgvector://" + pg_url.split("://", 1)[1])
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    ra, rb = ResolveHandler(settings, a), ResolveHandler(settings, b)
    for i, batch in enumerate(stamped()):
        (ra if i % 2 else rb)(batch)
    assert H.diff(want, H.snapshot(a, ("default",))) == {}
    exemplars = a.stats("default")["exemplars"]
    assert exemplars > 0
    assert ra.index.size("default") == exemplars  # index and store agree
    a.close()
    b.close()


def test_a_missing_batch_is_skipped_after_the_wait_and_applied_if_it_comes(
    tmp_path: Path, pg_url: str,
) -> None:
    """Batch 1 of a stream never reaches resolve (dead-lettered upstream): once batch 2 has
    waited ``gap_wait_s`` the gap is skipped and recorded, 2 is applied; when 1 turns up
    after all (replayed from the dead letters) it is applied, not answered as a replay."""
    from revisit.store.postgres_store import PostgresStore

    frames = H.scenario(48, people=6, face_ratio=0.9, tenants=("default",))
    bs = _embedded_batches(tmp_path, frames, 16)
    for i, b in enumerate(bs):
        b.batch_id = f"s-gap#{i:09d}"
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url,
                             pipeline={"gap_wait_s": 1})
    store = PostgresStore(pg_url)
    handler = ResolveHandler(settings, store)
    assert [x.batch_id for x in handler(bs[0])] == ["s-gap#000000000"]
    assert handler(bs[2]) == []  # 1 is missing: 2 waits
    assert handler.idle() == []  # not yet past the wait
    assert store.skipped_batches() == []
    time.sleep(1.2)
    assert [x.batch_id for x in handler.idle()] == ["s-gap#000000002"]
    skipped = store.skipped_batches("default")
    assert [(r["stream"], r["seq"]) for r in skipped] == [("s-gap", 1)]
    assert "dead-lettered" in skipped[0]["reason"] and skipped[0]["replayed_at"] is None
    assert store.parked_streams() == []
    late = handler(bs[1])
    assert [x.batch_id for x in late] == ["s-gap#000000001"]
    assert late[0].sightings
    assert store.skipped_batches(pending_only=True) == []
    stored = store.known_frames("default", [f.image_id for b in bs for f in b.frames])
    assert len(stored) == sum(len(b.frames) for b in bs)
    store.close()


def test_a_frame_past_retention_reaching_resolve_is_not_stored(tmp_path: Path,
                                                               pg_url: str) -> None:
    """A frame past its tenant's retention that reaches a resolve worker (published before
    the retention was shortened, replayed from the dead letters) is refused there, as in
    the embedded pipeline: nothing of it stored, and the batch's status lists it."""
    from tests.test_pipeline import past_retention_batch

    from revisit.ingest.status import BatchLedger, BatchStatus
    from revisit.store.postgres_store import PostgresStore
    from revisit.tenancy.db import Tenancy

    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url,
                             identity={"create_after": 1}, privacy={"retention_at_door": True})
    store = PostgresStore(pg_url)
    try:
        Tenancy(store).create_tenant("acme", retention_days=30)
        batch, recent, archived = past_retention_batch("acme", 90)
        ledger = BatchLedger(store)
        ledger.record(BatchStatus(batch.batch_id, "acme", "queued", 2))
        [out] = ResolveHandler(settings, store)(batch)
        assert store.known_frames("acme", [recent, archived]) == {recent}
        assert [s.image_id for s in out.sightings] == [recent]
        assert store.stats("acme")["visitors"] == 1
        st = ledger.get("acme", batch.batch_id)
        assert st is not None and st.state == "done" and st.processed == 1
        assert [r["image_id"] for r in st.rejected] == [archived]
        assert "older than tenant acme's retention of 30 days" in st.rejected[0]["reason"]
    finally:
        store.close()


def test_api_batch_status_with_a_broker(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """With a broker an API batch goes queued -> processing (the detect worker took it) ->
    done with its counts (committed with its sightings), in the shared store."""
    from revisit.api.metrics import Metrics
    from revisit.api.processing import BatchProcessor
    from revisit.store.postgres_store import PostgresStore

    settings = load_settings(None, data=tmp_path / "api", queue_url=redis_url,
                             store_url=pg_url)
    rt = Runtime(settings)
    processor = BatchProcessor(rt, Metrics(lambda: 0.0), threading.RLock(), queue_batches=4)
    frames = H.scenario(16, people=4, face_ratio=1.0, tenants=("acme",))
    status = processor.submit("acme", frames)
    assert processor.status("acme", status.batch_id).state == "queued"
    seen: set[str] = set()
    other = PostgresStore(pg_url)  # what another replica would answer
    try:
        with _workers(settings):
            end = time.monotonic() + 180
            while time.monotonic() < end:
                st = processor.status("acme", status.batch_id)
                seen.add(st.state)
                if st.state == "done":
                    break
                time.sleep(0.02)
        from revisit.ingest.status import BatchLedger

        final = BatchLedger(other).get("acme", status.batch_id)
        assert final is not None and final.state == "done", seen
        assert final.processed == 16 and final.faces >= 8 and final.sightings >= 8
        assert "processing" in seen, seen  # polled every 20 ms; detecting 16 frames takes longer
    finally:
        other.close()
        rt.close()


@pytest.mark.parametrize("broker", ["redis", "kafka"])
def test_http_batches_into_an_idle_broker_are_all_accepted(
    broker: str, tmp_path: Path, pg_url: str, request: pytest.FixtureRequest
) -> None:
    """50 HTTP batches into an idle system: 50 x 202. A 429 would have to mean a full
    queue, never a broker that takes a few milliseconds to confirm (Kafka did)."""
    from tests.api.conftest import make_env

    queue_url = _queue_url(broker, request)
    gen = make_env(tmp_path, processing=False, settings={"queue_url": queue_url,
                                                         "store_url": pg_url},
                   queue_batches=64)
    env = next(gen)
    try:
        frames = H.scenario(50, people=5, face_ratio=1.0, tenants=("acme",))
        codes = [env.post_batch("cam_a", [{"data": f.data, "camera_id": "camA",
                                           "ts": f.ts.isoformat(),
                                           "image_id": f"http-{i}"}]).status_code
                 for i, f in enumerate(frames)]
        assert codes == [202] * 50
    finally:
        gen.close()


def test_status_shows_the_backlog_and_ingest_can_only_publish(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """``ingest_frames(wait=False)`` (``revisit ingest --no-wait``) returns once published;
    ``revisit status`` then shows the batches waiting at detect and nothing stored."""
    import json

    from typer.testing import CliRunner

    from revisit.cli.main import app

    settings = load_settings(None, data=tmp_path / "st", queue_url=redis_url,
                             store_url=pg_url)
    rt = Runtime(settings)
    try:
        frames = H.scenario(40, people=4, face_ratio=1.0, tenants=("acme",))
        summary = ingest_frames(rt, iter(frames), wait=False)
        assert summary.frames == 40 and summary.sightings == 0
    finally:
        rt.close()
    env = {"REVISIT_DATA": str(tmp_path / "st"), "REVISIT_QUEUE_URL": redis_url,
           "REVISIT_STORE_URL": pg_url}
    res = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    batches = -(-40 // settings.pipeline.frame_batch)
    assert st["stages"]["detect"]["waiting"] == batches
    assert st["stages"]["detect"]["in_flight"] == 0 and st["stages"]["detect"]["dead_letters"] == 0
    assert st["stored_frames"].get("acme", 0) == 0
    table = CliRunner().invoke(app, ["status"], env=env)
    assert table.exit_code == 0 and "detect" in table.output and "frames stored" in table.output


def test_the_service_shows_the_pipeline(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """With a broker, GET /v1/pipeline and /metrics show what waits at each stage."""
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False,
                   settings={"queue_url": redis_url, "store_url": pg_url})
    env = next(gen)
    try:
        frames = H.scenario(3, people=3, face_ratio=1.0, tenants=("acme",))
        for i, f in enumerate(frames):
            r = env.post_batch("cam_a", [{"data": f.data, "camera_id": "camA",
                                          "ts": f.ts.isoformat(), "image_id": f"p-{i}"}])
            assert r.status_code == 202
        st = env.client.get("/v1/pipeline").json()
        assert st["mode"] == "broker" and st["stages"]["detect"]["waiting"] == 3
        assert st["stages"]["resolve"]["waiting"] == 0
        text = env.client.get("/metrics").text
        assert 'revisit_stage_batches{stage="detect",state="waiting"} 3.0' in text
    finally:
        gen.close()


def test_an_image_sent_again_at_another_time_is_stored_once(tmp_path: Path, pg_url: str) -> None:
    """The same image id in two batches with different timestamps (sent again while its
    first copy was in flight): one frame, its sightings once, and the report's rollup
    agrees with the raw query (PostgreSQL's sightings key includes the time)."""
    from datetime import date, timedelta

    from revisit.report.query import ReportQuery
    from revisit.store.postgres_store import PostgresStore

    frames = H.scenario(8, people=4, face_ratio=1.0, tenants=("acme",))
    first = _embedded_batches(tmp_path, frames[:4], 4)[0]
    fresh = H.scenario(8, people=4, face_ratio=1.0, tenants=("acme",))
    again = fresh[:2]
    for f in again:
        f.ts += timedelta(minutes=7)  # the same image ids as two of the first batch, later
    second = _embedded_batches(tmp_path, again + fresh[4:6], 4)[0]
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    store = PostgresStore(pg_url)
    handler = ResolveHandler(settings, store)
    one = handler(first)[0]
    two = handler(second)[0]
    assert len(one.sightings) >= 3 and {s.image_id for s in two.sightings} <= {
        f.image_id for f in fresh[4:6]}  # the images sent again were left out
    assert store.stats("acme")["frames"] == 6
    assert store.stats("acme")["sightings"] == len(one.sightings) + len(two.sightings)
    q = ReportQuery(start=date(2024, 3, 1), end=date(2024, 3, 31), tenant="acme")
    store.use_rollup = False
    raw = store.report_header(q)
    store.use_rollup = True
    assert store.report_header(q) == raw
    assert raw.total_sightings == len(one.sightings) + len(two.sightings)
    store.close()


def test_occupancy_counts_and_exclusion_zones_through_the_broker(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """Detect workers read cameras' zones from the shared store, count people on counting
    cameras and veto faces in exclusion zones; counts travel through the queues and are
    stored with their batch."""
    from revisit.config.occupancy import CameraZones
    from revisit.occupancy.db import OccupancyDB
    from revisit.store.postgres_store import PostgresStore
    from revisit.tenancy.db import Tenancy

    frames = H.scenario(12, people=4, face_ratio=1.0, tenants=("default",), cameras=2)
    counting = {f.image_id for f in frames if f.camera_id == "cam00"}
    vetoed = {f.image_id for f in frames if f.camera_id == "cam01"}
    assert counting and vetoed
    store = PostgresStore(pg_url)
    try:
        db = OccupancyDB(store, Tenancy(store))
        db.set_camera("default", "cam00", CameraZones(counting=True))
        db.set_camera("default", "cam01", CameraZones(  # the whole (160 px) frame excluded
            exclude=[[(0, 0), (5000, 0), (5000, 5000), (0, 5000)]]))
        settings = load_settings(None, data=tmp_path / "dist", queue_url=redis_url,
                                 store_url=pg_url)
        rt = Runtime(settings)
        try:
            with _workers(settings, 1):
                summary = ingest_frames(rt, iter(frames))
                assert summary.frames == len(frames)
                time.sleep(1.0)
        finally:
            rt.close()
        with store.read() as s:
            rows = s.execute("SELECT image_id, zone, raw FROM people_counts "
                             "WHERE tenant = 'default'").fetchall()
            faces_at = {r[0] for r in s.execute(
                "SELECT image_id FROM sightings WHERE tenant = 'default'").fetchall()}
        assert {r[0] for r in rows} == counting and {r[1] for r in rows} == {""}
        assert faces_at and not faces_at & vetoed  # no sighting inside the exclusion zone
    finally:
        store.close()


def _two_snapshots_held(tmp_path: Path, pg_url: str, n: int = 2
                        ) -> tuple[list[Batch], object]:
    """Two (``n``) snapshots of one person, a batch each, and settings under which they are
    held (three found a visitor), decided after 0.5 s without a batch."""
    by_person: dict[bytes, list] = {}
    for f in _same_person_frames(400):
        by_person.setdefault(f.data, []).append(f)
    two = next(iter(by_person.values()))[:n]
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url,
                             identity={"create_after": 3}, pipeline={"idle_flush_s": 0.5})
    return _embedded_batches(tmp_path, two, 1), settings


def test_an_idle_resolver_stores_the_faces_its_open_tracks_hold(
        tmp_path: Path, pg_url: str) -> None:
    """The end of a stream: a track that waited for more snapshots (here: three are
    needed to found a visitor, two came) is decided once nothing has come for a while,
    as the embedded default decides it at the end of a run."""
    from revisit.store.postgres_store import PostgresStore

    batches, settings = _two_snapshots_held(tmp_path, pg_url)
    store = PostgresStore(pg_url)
    try:
        handler = ResolveHandler(settings, store)
        held = [b for batch in batches for b in handler(batch)]
        assert sum(len(b.sightings) for b in held) == 0  # waiting for a third snapshot
        assert handler.idle() == []  # not idle long enough yet
        time.sleep(0.6)
        (tail,) = handler.idle()
        faces = sum(len(b.faces) for b in batches)
        assert len(tail.sightings) == faces >= 2
        stored = {s.face_image_id for s in tail.sightings}
        assert set(store.existing_sightings("default", stored)) == stored
        assert handler.idle() == []  # nothing held any more
    finally:
        store.close()


def test_faces_held_by_a_resolver_that_dies_are_decided_by_another(
        tmp_path: Path, pg_url: str) -> None:
    """Held faces are committed with their batch: a resolver killed while holding them
    (no flush) leaves them in the store; another resolver, once they have waited as long
    as an idle flush would, decides them (in the embedded default's way)."""
    from revisit.store.postgres_store import PostgresStore

    batches, settings = _two_snapshots_held(tmp_path, pg_url)
    store = PostgresStore(pg_url)
    try:
        dead = ResolveHandler(settings, store)
        held = [b for batch in batches for b in dead(batch)]
        assert sum(len(b.sightings) for b in held) == 0
        faces = {f.face_image_id for b in batches for f in b.faces}
        assert {f.face_image_id for f in store.held_faces("default")} == faces
        other = ResolveHandler(settings, store)  # the first one is gone, without a flush
        assert other.idle() == []  # the held faces are not quiet long enough yet
        time.sleep(0.6)
        (tail,) = other.idle()
        assert {s.face_image_id for s in tail.sightings} == faces and len(faces) >= 2
        assert set(store.existing_sightings("default", faces)) == faces
        assert store.held_faces("default") == [] and other.idle() == []
    finally:
        store.close()


def test_a_resolver_stopped_gracefully_leaves_its_open_tracks_to_the_next(
        tmp_path: Path, pg_url: str) -> None:
    """A graceful stop (a deploy) saves the open tracks, as the embedded pipeline does: the
    next resolver continues them. The last batch delivered again (its ack lost in the stop)
    is a replay, not resolved against the restored track: no sighting twice."""
    from revisit.store.postgres_store import PostgresStore

    photo = _same_person_frames(1)[0]  # one camera, a snapshot every 2 s
    frames = [dataclasses.replace(photo, image_id=f"{photo.image_id}-{k}",
                                  ts=photo.ts + timedelta(seconds=2 * k)) for k in range(3)]
    batches = _embedded_batches(tmp_path, frames, 1)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url,
                             identity={"create_after": 3, "static_after_s": 3600})
    store = PostgresStore(pg_url)
    try:
        first = ResolveHandler(settings, store)
        held = [b for batch in batches[:2] for b in first(batch)]
        assert sum(len(b.sightings) for b in held) == 0  # waiting for a third snapshot
        (tail,) = first.stop()
        people = {s.face_id for s in tail.sightings}  # each face of the scene is a person
        assert len(people) == len(batches[0].faces) >= 1
        assert sorted(t.visitor_id for t in store.open_tracks("default")) == sorted(people)
        nxt = ResolveHandler(settings, store)
        (again,) = nxt(batches[1])
        assert {s.face_id for s in again.sightings} == people
        (third,) = nxt(batches[2])
        assert {s.face_id for s in third.sightings} == people and not third.visitors_created
        assert store.open_tracks("default") == []  # read back once
        stats = store.stats("default")
        assert (stats["sightings"], stats["visitors"]) == (3 * len(people), len(people))
    finally:
        store.close()


def test_a_resolve_worker_stopped_saves_its_open_tracks(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """``revisit worker --stage resolve`` stopped (SIGTERM sets ``stop``) saves its open
    tracks on the way out, and forwards what that decided to the store stage."""
    from revisit.queue.factory import open_queue
    from revisit.store.postgres_store import PostgresStore

    batches, _ = _two_snapshots_held(tmp_path, pg_url)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url, queue_url=redis_url,
                             identity={"create_after": 3})
    q = open_queue(redis_url, "embeddings")
    for b in batches:
        q.put(b)
    w = Worker(settings, "resolve", name="stop-test")
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while w.stats.batches < len(batches) and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop.set()
    t.join(timeout=10)
    store = PostgresStore(pg_url)
    try:
        assert w.stats.batches == len(batches)
        saved = store.open_tracks("default")
        assert saved and all(t.visitor_id is not None for t in saved)
        out = open_queue(redis_url, "sightings")
        forwarded = 0
        while (d := out.get(timeout=0.5)) is not None:
            forwarded += len(d.batch.sightings)
            d.ack()
        assert forwarded == store.stats("default")["sightings"] > 0
    finally:
        store.close()


def test_a_store_outage_does_not_send_good_batches_to_the_dead_letters(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the store is down the worker tries the batch it holds again, waiting longer
    each time, instead of handing it back (every hand-back counts as a delivery: a short
    outage would dead-letter good batches). The outage is the driver's own error
    raised by the stage (the shared PostgreSQL cannot be stopped under other tests)."""
    import psycopg
    from tests.queue.queue_testdata import camera_batch

    from revisit.distributed import worker as W
    from revisit.queue.factory import open_queue

    calls: list[str] = []

    def flaky(settings: object, stage: str) -> tuple:
        def handle(b: Batch) -> list[Batch]:
            calls.append(b.batch_id)
            if len(calls) <= 4:
                raise psycopg.OperationalError("connection refused (server restarting)")
            return []
        return handle, None

    monkeypatch.setattr(W, "_handler", flaky)
    monkeypatch.setattr(W, "FIRST_RETRY_WAIT_S", 0.05)
    url = redis_url + "&max_deliveries=2"
    settings = load_settings(None, data=tmp_path, queue_url=url)
    open_queue(url, "sightings").put(camera_batch("b1"))
    w = Worker(settings, "store", name="store-test")
    stats = w.run(max_idle_s=2.0)
    assert calls == ["b1"] * 5 and stats.batches == 1 and stats.errors == 4
    q = open_queue(url, "sightings")
    assert q.dead_letters() == 0 and q.depth() == 0


def test_an_idle_resolver_leaves_another_resolvers_live_track_alone(
        tmp_path: Path, pg_url: str) -> None:
    """Resolver A goes idle while B's track of the same tenant (another camera) holds
    faces written a moment ago: A decides its own open tracks, not B's held faces."""
    from dataclasses import replace

    from revisit.store.postgres_store import PostgresStore

    batches, settings = _two_snapshots_held(tmp_path, pg_url)
    mine = [replace(batches[0], batch_id="a0", frames=[replace(f, camera_id="camA", image_id="a0")
                                                       for f in batches[0].frames],
                    faces=[replace(f, camera_id="camA", image_id="a0",
                                   face_image_id="a0-" + f.face_image_id)
                           for f in batches[0].faces])]
    store_a, store_b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        a, b = ResolveHandler(settings, store_a), ResolveHandler(settings, store_b)
        assert sum(len(x.sightings) for x in a(mine[0])) == 0  # A holds its camA face
        for batch in batches:
            assert sum(len(x.sightings) for x in b(batch)) == 0  # B holds two of camB
        theirs = {f.face_image_id for x in batches for f in x.faces}
        time.sleep(0.6)
        a._last_work = time.monotonic() - 1
        store_b.write(Batch("b-live", held=[f for x in batches for f in x.faces]))  # B is live
        tails = a.idle()
        decided = {s.face_image_id for t in tails for s in t.sightings}
        decided |= {key[1] for t in tails for key in t.released}
        assert not decided & theirs
        assert theirs <= {f.face_image_id for f in store_a.held_faces("default")}
    finally:
        store_a.close()
        store_b.close()


def _stream_batches(tmp_path: Path, n: int = 3) -> list[Batch]:
    frames = H.scenario(16 * n, people=6, face_ratio=0.9, tenants=("default",))
    bs = _embedded_batches(tmp_path, frames, 16)
    for i, b in enumerate(bs):
        b.batch_id = f"s-drain#{i:09d}"
    return bs


def test_parked_batches_applied_before_a_failure_still_go_on(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """0 arrives after 2 and 1; applying the parked 2 fails once (the connection drops):
    0 and the parked 1, both committed, still go on to the store stage, and 2 follows
    from the next idle pass (they were lost to the store stage, and so their alerts)."""
    from revisit.store.postgres_store import PostgresStore

    bs = _stream_batches(tmp_path)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    store = PostgresStore(pg_url)
    h = ResolveHandler(settings, store)
    assert h(bs[2]) == [] and h(bs[1]) == []
    real, failed = ResolveHandler._apply, []

    def once(self: ResolveHandler, tx: object, batch: Batch) -> Batch:
        if batch.batch_id.endswith("#000000002") and not failed:
            failed.append(1)
            raise RuntimeError("connection lost (once)")
        return real(self, tx, batch)

    monkeypatch.setattr(ResolveHandler, "_apply", once)
    assert [b.batch_id for b in h(bs[0])] == ["s-drain#000000000", "s-drain#000000001"]
    assert [b.batch_id for b in h.idle()] == ["s-drain#000000002"]
    assert store.parked_streams() == []
    store.close()


def test_a_parked_batch_that_cannot_be_applied_is_set_aside(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """It goes to the dead letters, recorded as skipped, and the stream goes on (it must
    not hold its stream, and the batches behind it, for ever); replayed after fixing its
    cause, it is applied out of order."""
    from revisit.queue.codec import decode_batch
    from revisit.store.postgres_store import PostgresStore

    bs = _stream_batches(tmp_path)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    store = PostgresStore(pg_url)
    h = ResolveHandler(settings, store)
    dead: list[tuple[bytes, str]] = []
    h.dead_letter = lambda payload, why: dead.append((payload, why))
    assert h(bs[2]) == [] and h(bs[1]) == []
    real = ResolveHandler._apply

    def poison(self: ResolveHandler, tx: object, batch: Batch) -> Batch:
        if batch.batch_id.endswith("#000000001"):
            raise ValueError("a string literal cannot contain NUL (0x00) characters")
        return real(self, tx, batch)

    monkeypatch.setattr(ResolveHandler, "_apply", poison)
    assert [b.batch_id for b in h(bs[0])] == ["s-drain#000000000", "s-drain#000000002"]
    assert store.parked_streams() == []
    (payload, why), = dead
    assert decode_batch(payload).batch_id == "s-drain#000000001" and "NUL" in why
    monkeypatch.setattr(ResolveHandler, "_apply", real)  # fixed; the dead letter comes back
    assert [b.batch_id for b in h(decode_batch(payload))] == ["s-drain#000000001"]
    store.close()


def test_a_worker_that_always_has_work_still_sweeps(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolve stage applies parked batches of a stream that went quiet in idle();
    a resolver that never waits for a batch must still get there."""
    from tests.queue.queue_testdata import camera_batch

    from revisit.distributed import worker as W
    from revisit.queue.factory import open_queue

    swept: list[int] = []

    class Busy:
        def __call__(self, b: Batch) -> list[Batch]:
            return []

        def idle(self) -> list[Batch]:
            swept.append(1)
            return []

    monkeypatch.setattr(W, "_handler", lambda settings, stage: (Busy(), None))
    monkeypatch.setattr(W, "BUSY_SWEEP_S", 0.0)
    settings = load_settings(None, data=tmp_path, queue_url=redis_url)
    q = open_queue(redis_url, "sightings")
    for i in range(5):
        q.put(camera_batch(f"b{i}"))
    w = Worker(settings, "store", name="busy-test")
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while w.stats.batches < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop.set()
    t.join(timeout=10)
    assert w.stats.batches == 5 and len(swept) >= 4


def test_parked_batches_a_killed_resolver_applied_are_forwarded_by_another(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver commits 0 and drains the parked 1 and 2, then dies before the worker
    puts them on the store stage's queue. 0 comes back (never acked) as a replay; 1 and 2
    were acked when parked, so only the reorder buffer still holds them: another
    resolver's idle pass forwards them once they are FORWARD_ORPHAN_S old, with the
    stored assignments (their alerts were lost before)."""
    from revisit.distributed import resolve
    from revisit.store.postgres_store import PostgresStore

    bs = _stream_batches(tmp_path)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    store, other_store = PostgresStore(pg_url), PostgresStore(pg_url)
    dying = ResolveHandler(settings, store)
    assert dying(bs[2]) == [] and dying(bs[1]) == []
    applied = dying(bs[0])
    assert [b.batch_id for b in applied] == [f"s-drain#00000000{i}" for i in range(3)]
    # killed here: dying.forwarded() never runs
    other = ResolveHandler(settings, other_store)
    assert other.idle() == []  # a live resolver may still be forwarding them
    monkeypatch.setattr(resolve, "FORWARD_ORPHAN_S", 0.0)
    again = other.idle()
    assert [b.batch_id for b in again] == ["s-drain#000000001", "s-drain#000000002"]
    for was, now in zip(applied[1:], again, strict=True):
        assert sorted((s.face_image_id, s.face_id) for s in now.sightings) == sorted(
            (s.face_image_id, s.face_id) for s in was.sightings) != []
    other.forwarded()
    assert other.idle() == [] and store.parked_streams() == []
    assert store.unforwarded(resolve.now_utc()) == []
    store.close()
    other_store.close()


def test_an_orphaned_parked_batch_is_forwarded_by_one_idle_resolver(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every idle resolver (each worker thread) looks for applied, unforwarded parked
    batches: the first to find one claims it, the others do not forward it again."""
    from revisit.distributed import resolve
    from revisit.store.postgres_store import PostgresStore

    bs = _stream_batches(tmp_path)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url)
    stores = [PostgresStore(pg_url) for _ in range(3)]
    dying = ResolveHandler(settings, stores[0])
    assert dying(bs[2]) == [] and dying(bs[1]) == []
    assert len(dying(bs[0])) == 3  # killed before forwarding 1 and 2
    monkeypatch.setattr(resolve, "FORWARD_ORPHAN_S", 1.0)
    time.sleep(1.1)
    a, b = ResolveHandler(settings, stores[1]), ResolveHandler(settings, stores[2])
    first, second = a.idle(), b.idle()
    assert [x.batch_id for x in first] == ["s-drain#000000001", "s-drain#000000002"]
    assert second == []
    a.forwarded()
    assert stores[0].unforwarded(resolve.now_utc()) == []
    for s in stores:
        s.close()


def test_a_batch_retried_after_a_lost_commit_is_counted_once(
        tmp_path: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops at the commit: the worker retries the delivery it holds. The
    first attempt's decisions were rolled back, so the retry must start from the batch as
    delivered: not from the one the resolver filled (its sightings and new visitors would
    go on twice to the store stage, and into the batch's status)."""
    import psycopg

    from revisit.distributed import worker as W
    from revisit.ingest.status import BatchLedger, BatchStatus
    from revisit.queue.factory import open_queue
    from revisit.store import postgres_store as P

    frames = H.scenario(16, people=6, face_ratio=0.9, tenants=("default",))
    [batch] = _embedded_batches(tmp_path, frames, 16)
    batch.batch_id = "B-lost-commit"
    store = P.PostgresStore(pg_url)
    BatchLedger(store).record(BatchStatus(batch.batch_id, "default", "queued", len(frames)))
    real, dropped = P.PostgresStore.identity_transaction, []

    @contextlib.contextmanager
    def drops_once(self: P.PostgresStore, *a: object, **k: object) -> Iterator[object]:
        with real(self, *a, **k) as tx:  # type: ignore[arg-type]
            yield tx
            if not dropped:  # everything written, then the commit never happens
                dropped.append(1)
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(P.PostgresStore, "identity_transaction", drops_once)
    monkeypatch.setattr(W, "FIRST_RETRY_WAIT_S", 0.05)
    open_queue(redis_url, "embeddings").put(batch)
    settings = load_settings(None, data=tmp_path / "r", store_url=pg_url, queue_url=redis_url)
    stats = Worker(settings, "resolve", name="r-test").run(max_idle_s=2.0)
    assert dropped and stats.batches == 1
    out = open_queue(redis_url, "sightings").get(timeout=2)
    stored = store.stats("default")
    assert out is not None and stored["sightings"] > 0
    assert len(out.batch.sightings) == stored["sightings"]
    assert len({s.face_image_id for s in out.batch.sightings}) == stored["sightings"]
    assert len(out.batch.visitors_created) == stored["visitors"]
    st = BatchLedger(store).get("default", batch.batch_id)
    assert st is not None and st.state == "done"
    assert (st.sightings, st.new_visitors) == (stored["sightings"], stored["visitors"])
    store.close()


def test_a_batch_that_kills_its_worker_until_dead_lettered_says_so(
        tmp_path: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that kills the detect worker (marked ``processing`` each time) is moved to
    the dead letters after ``max_deliveries``: its status says ``failed`` and where it
    went, not ``processing`` for ever (which retention never deletes either)."""
    from tests.queue.queue_testdata import camera_batch

    from revisit.distributed import worker as W
    from revisit.ingest.status import BatchLedger, BatchStatus
    from revisit.queue.factory import open_queue
    from revisit.store.postgres_store import PostgresStore

    url = redis_url + "&max_deliveries=2"
    settings = load_settings(None, data=tmp_path, queue_url=url, store_url=pg_url)
    store = PostgresStore(pg_url)
    ledger = BatchLedger(store)
    batch = camera_batch("B-poison")
    tenant = batch.frames[0].tenant
    ledger.record(BatchStatus(batch.batch_id, tenant, "queued", len(batch.frames)))
    open_queue(url, "frames").put(batch)
    for _ in range(2):  # taken by a worker "k" that dies on it (no ack, no close)
        d = open_queue(url, "frames", consumer="k-0").get(timeout=2)
        assert d is not None and d.batch.batch_id == batch.batch_id
        ledger.processing(tenant, batch.batch_id)

    monkeypatch.setattr(W, "_handler", lambda s, stage: ((lambda b: [b]), None))
    Worker(settings, "detect", name="k").run(max_idle_s=1.0)  # restarted under its name
    q = open_queue(url, "frames")
    assert q.dead_letters() == 1 and q.depth() == 0  # type: ignore[attr-defined]
    st = ledger.get(tenant, batch.batch_id)
    assert st is not None and st.state == "failed", st
    assert "dead letters" in st.error and "replay-dead" in st.error
    store.close()


def test_a_handler_opened_during_a_retry_is_closed_when_the_batch_then_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store drops: the resolve worker closes its handler and opens another for the
    retry; if the batch then fails for a reason of its own, that new handler (and its store
    connection) is closed too, not left open while the loop starts a third."""
    import psycopg

    from revisit.distributed import worker as W

    opened: list[Any] = []
    calls: list[int] = []

    class Closable:
        closed = False

        def close(self) -> None:
            self.closed = True

    def handler(settings: Any, stage: str) -> tuple[Any, Any]:
        def handle(batch: Batch) -> list[Batch]:
            calls.append(1)
            if len(calls) == 1:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            raise ValueError("a batch that fails on its own")

        opened.append(Closable())
        return handle, opened[-1]

    monkeypatch.setattr(W, "_handler", handler)
    monkeypatch.setattr(W, "FIRST_RETRY_WAIT_S", 0.01)
    settings = load_settings(None, data=tmp_path / "d", queue_url="redis://127.0.0.1:6379/15")
    first, closable = handler(settings, "resolve")
    with pytest.raises(ValueError, match="on its own"):
        Worker(settings, "resolve")._handle(0, Batch("B-1"), first, closable, None)  # type: ignore[arg-type]
    assert len(opened) == 2 and all(c.closed for c in opened)
