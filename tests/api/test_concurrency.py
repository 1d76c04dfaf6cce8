"""Races inside one embedded ``revisit serve`` process, replayed deterministically: an
admin action or a second request landing between two steps of the pipeline (no models:
hand-built faces with synthetic embeddings)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.config import load_settings
from revisit.records import Batch, Face, Frame, face_image_id

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
_ids = itertools.count()


def person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def look(base: np.ndarray, seed: int) -> np.ndarray:
    """Another snapshot of the same person: close to ``base``."""
    v = base + 0.05 * person(10_000 + seed)
    return (v / np.linalg.norm(v)).astype(np.float32)


def face(e: np.ndarray, *, camera: str, seconds: float, tenant: str = "acme") -> Face:
    image_id = f"img-{next(_ids)}"
    bbox = (100, 100, 80, 100)
    return Face(tenant=tenant, camera_id=camera, location_id="101", image_id=image_id,
                ts=T0 + timedelta(seconds=seconds),
                face_image_id=face_image_id(tenant, image_id, bbox), bbox=bbox,
                landmarks=np.zeros((5, 2), np.float32), det_score=0.95, quality=0.9,
                embedding=e)


def batch_of(faces: list[Face]) -> Batch:
    frames = {f.image_id: Frame(f.tenant, f.camera_id, f.location_id, f.image_id, f.ts)
              for f in faces}
    return Batch(f"B-{next(_ids)}", frames=list(frames.values()), faces=faces)


@pytest.fixture
def svc(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = load_settings(None, data=tmp_path / "data", identity={"create_after": 1})
    s = Service(settings, ServiceSettings(purge_interval_s=0))
    s.tenancy.create_tenant("acme", "ACME")
    yield s
    s.runtime.close()


def stages(svc: Service) -> tuple:
    """The pipeline's own resolve and store steps (with the processor's locking)."""
    wrapped = dict(svc.processor.stages())
    return wrapped["resolve"], wrapped["store"]


def visitors(b: Batch) -> set[str]:
    return {x.face_id for x in b.sightings}


def test_a_merge_between_resolve_and_store_does_not_split_a_new_visitor(svc) -> None:
    resolve, store = stages(svc)
    a, a2, b, c = person(1), person(4), person(2), person(3)
    # two visitors an admin will merge (one person to the admin's eye)
    (v1,) = visitors(store(resolve(batch_of([face(a, camera="c1", seconds=0)]))))
    (v2,) = visitors(store(resolve(batch_of([face(a2, camera="c2", seconds=0)]))))
    # a batch founds visitor C: resolved, waiting for the store step ...
    first = resolve(batch_of([face(c, camera="c1", seconds=600)]))
    (vc,) = visitors(first)
    # ... when the merge lands
    svc.merge("acme", v1, v2, "same person", "test")
    store(first)
    # C again, on the same camera a moment later, and on another camera: still C
    again = store(resolve(batch_of([face(look(c, 2), camera="c1", seconds=605)])))
    elsewhere = store(resolve(batch_of([face(look(c, 3), camera="c2", seconds=4000)])))
    assert visitors(again) == {vc}
    assert visitors(elsewhere) == {vc}
    # and an unrelated person is still someone new
    assert visitors(store(resolve(batch_of([face(b, camera="c3", seconds=0)])))) - {vc, v1}


class _Paused:
    """A faiss index whose search stops after searching, before its ids are read back,
    until ``go`` (or a timeout): the moment another thread could change the index."""

    def __init__(self, real, paused, go) -> None:  # type: ignore[no-untyped-def]
        self.real, self.paused, self.go = real, paused, go

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)

    def search(self, q, k):  # type: ignore[no-untyped-def]
        out = self.real.search(q, k)
        self.paused.set()
        self.go.wait(2)
        return out


def test_removing_an_enrolment_does_not_pull_the_index_from_under_the_resolver(svc) -> None:
    import threading

    from fastapi.testclient import TestClient

    from revisit.api.app import create_app

    resolve, store = stages(svc)
    admin = svc.tenancy.create_key("acme", "admin")[1]
    client = TestClient(create_app(service=svc, processing=False))
    auth = {"Authorization": f"Bearer {admin}"}
    p = person(7)
    (v,) = visitors(store(resolve(batch_of([face(p, camera="c1", seconds=0)]))))
    r = client.post("/v1/enrolments/visitor", headers=auth, json={
        "group": "staff", "visitor_id": v, "reason": "works here"})
    assert r.status_code == 201, r.text
    enrolment = r.json()["enrolment_id"]
    # the resolver searches the index for the person seen again ...
    t = svc.runtime.index._tenants["acme"]  # type: ignore[attr-defined]
    paused, go = threading.Event(), threading.Event()
    t.index = _Paused(t.index, paused, go)
    b = batch_of([face(look(p, 1), camera="c2", seconds=3600)])
    out: list[Batch] = []
    resolving = threading.Thread(target=lambda: out.append(resolve(b)))
    resolving.start()
    assert paused.wait(10)
    # ... when an admin ends the enrolment
    removed: list[int] = []
    removing = threading.Thread(target=lambda: removed.append(client.delete(
        f"/v1/enrolments/{enrolment}", headers=auth).status_code))
    removing.start()
    removing.join(1.0)
    go.set()
    resolving.join(10)
    removing.join(10)
    assert removed == [200]
    assert b.batch_id not in svc.processor._failed, "the batch failed in resolve"
    assert visitors(out[0]) == {v}


class _NoModels:
    """Detect and embed that find nothing (the status path needs no faces)."""

    def detect(self, batch: Batch) -> Batch:
        return batch

    def embed(self, batch: Batch) -> Batch:
        return batch

    def close(self) -> None:
        return None


def test_a_batch_taken_at_once_by_the_pipeline_keeps_its_status(svc) -> None:
    import threading

    proc = svc.processor
    svc.runtime.use_models(_NoModels())
    taken = threading.Event()
    mark, put = proc._mark_processing, proc.inbox.put

    def marking(batch_id: str) -> None:
        mark(batch_id)
        taken.set()

    def put_then_yield(batch: Batch, timeout: float | None = None) -> None:
        put(batch, timeout=timeout)
        taken.wait(2)  # the pipeline thread takes the batch before submit() goes on

    proc._mark_processing = marking  # type: ignore[method-assign]
    proc.inbox.put = put_then_yield  # type: ignore[method-assign]
    after = _status_once_idle(proc, "img-status")
    assert after is not None, "the accepted batch's status is gone (GET answers 404)"
    assert after.state == "done"


def test_a_batch_reads_as_in_flight_until_its_done_status_is_stored(svc) -> None:
    """The processor must not read as idle (nor a GET as anything but its state in memory)
    while a batch's "done" is still being written: waiting for idle, then reading the
    status, read "processing" under load."""
    proc = svc.processor
    svc.runtime.use_models(_NoModels())
    busy_then: list[bool] = []  # busy() as each "done" is written
    done = proc.ledger.done

    def recording(tenant: str, batch: Batch) -> None:
        busy_then.append(proc.busy())
        done(tenant, batch)

    proc.ledger.done = recording  # type: ignore[method-assign]
    after = _status_once_idle(proc, "img-in-flight")
    assert busy_then and busy_then[0], "the processor read as idle before the status was stored"
    assert after.state == "done"


def _status_once_idle(proc: Any, image_id: str) -> Any:
    """One frame through the running processor: its batch's status once it reads idle."""
    proc.start()
    try:
        st = proc.submit("acme", [Frame("acme", "c1", "101", image_id, T0, data=b"x" * 10)])
        assert proc.wait_idle(10)
        return proc.status("acme", st.batch_id)
    finally:
        proc.stop(drain_s=1)


def test_a_retry_while_its_first_copy_is_being_stored_is_a_duplicate(svc) -> None:
    proc = svc.processor
    st = svc.runtime.store
    frame = Frame("acme", "c1", "101", "img-retry", T0, data=b"x" * 10)
    first = proc.submit("acme", [frame])  # queued: the pipeline is about to store it
    (queued,) = [d.batch for d in iter(lambda: proc.inbox.get(timeout=0), None)]
    ask = st.known_frames

    def stored_meanwhile(tenant: str, ids):  # type: ignore[no-untyped-def]
        out = ask(tenant, ids)  # not stored yet ...
        st.write(queued)  # ... stored, and done, before the retry goes on
        proc._done(queued)
        return out

    st.known_frames = stored_meanwhile  # type: ignore[method-assign]
    retry = proc.submit("acme", [frame])
    assert first.state == "queued"
    assert (retry.duplicates, retry.state) == (1, "done")
    assert proc.depth() == 0  # not queued to be run through the models again


def test_the_store_closes_the_cursors_of_threads_that_ended(svc) -> None:
    """A server's request threads come and go (anyio ends one idle for 10 s): each
    thread's DuckDB cursor must not stay open until the store closes."""
    import threading

    st = svc.runtime.store
    for _ in range(50):
        t = threading.Thread(target=lambda: st.known_frames("acme", ["x"]))
        t.start()
        t.join()
    st.known_frames("acme", ["x"])  # this thread's cursor: the ended threads' go
    assert len(st.engine._cursors._all) <= 2  # type: ignore[attr-defined]


def test_the_door_and_other_uploads_do_not_wait_for_a_spool_write(svc) -> None:
    """An upload's spool write (fsync) runs outside the processor's lock: meanwhile the
    door's full() answers, another camera's batch is accepted, and a copy of the batch
    being written is told to retry (429), never confirmed as a duplicate before its first
    copy is on disk."""
    import threading

    from revisit.queue.base import QueueFull

    proc = svc.processor
    writing, release = threading.Event(), threading.Event()
    put = proc.spool.put

    def slow_put(batch: Batch, meta: dict | None = None) -> None:
        if batch.frames[0].image_id == "img-slow":
            writing.set()
            assert release.wait(10)
        put(batch, meta)

    proc.spool.put = slow_put  # type: ignore[method-assign]
    slow = Frame("acme", "c1", "101", "img-slow", T0, data=b"x" * 10)
    first: list = []
    t = threading.Thread(target=lambda: first.append(proc.submit("acme", [slow])))
    t.start()
    try:
        assert writing.wait(10)
        done = threading.Event()
        answers: list = []

        def others() -> None:
            answers.append(proc.full())
            other = Frame("acme", "c2", "101", "img-other", T0, data=b"y" * 10)
            answers.append(proc.submit("acme", [other]).state)
            try:
                proc.submit("acme", [slow])
            except QueueFull as exc:
                answers.append(str(exc))
            done.set()

        threading.Thread(target=others, daemon=True).start()
        assert done.wait(5), "blocked behind the spool write"
        assert answers[:2] == [False, "queued"]
        assert "retry" in answers[2]
    finally:
        release.set()
        t.join(10)
    assert first and first[0].state == "queued"


def test_a_reload_after_consolidation_keeps_its_exemplar_trim(tmp_path: Path) -> None:
    """Consolidation merges, trims the merged visitor's exemplars to max_exemplars in the
    store, then reloads the resolver: the trimmed ones (their sightings are stored) are
    not 'decided in a batch not stored yet' and must not come back in memory and index."""
    from revisit.identity.consolidate import _trim_exemplars

    settings = load_settings(None, data=tmp_path / "data", identity={
        "create_after": 1, "max_exemplars": 2, "exemplars_per_track": 2})
    s = Service(settings, ServiceSettings(purge_interval_s=0))
    try:
        s.tenancy.create_tenant("acme", "ACME")
        resolve, store = stages(s)
        a, b = person(1), person(4)
        va: set[str] = set()
        vb: set[str] = set()
        for i in range(3):  # a camera each: every face its own track, its own exemplar
            va |= visitors(store(resolve(batch_of([face(look(a, i), camera=f"a{i}",
                                                        seconds=100 * i)]))))
            vb |= visitors(store(resolve(batch_of([face(look(b, i), camera=f"b{i}",
                                                        seconds=100 * i)]))))
        (v1,), (v2,) = va, vb
        st = s.runtime.store

        def stored() -> list[str]:
            return sorted(ex.face_image_id for chunk in st.load_exemplars("acme")
                          for ex in chunk if ex.visitor_id == v1)

        st.merge_visitors("acme", v1, v2, reason="consolidate")
        _trim_exemplars(settings, st, "acme")
        assert len(stored()) == 2
        resolver = s.runtime.loaded_resolver
        resolver.reload("acme")
        held = resolver._galleries["acme"].exemplars  # type: ignore[attr-defined]
        assert sorted(h.face_image_id for h in held.get(v1, [])) == stored()
    finally:
        s.runtime.close()
