"""Accepted batches survive a stop: the spool on disk, and a restarted server that runs
what the previous one accepted (real models, real faces)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.api.conftest import Env, make_env, photo

from revisit.api import journal
from revisit.api.app import create_app
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.api.spool import Spool
from revisit.config import load_settings
from revisit.records import Batch, Frame

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _frame(i: int) -> Frame:
    return Frame(tenant="acme", camera_id="camA", location_id="101", image_id=f"img-{i}",
                 ts=datetime(2024, 5, 2, 8, i, tzinfo=UTC), data=bytes([i]) * 100)


def test_spool_keeps_batches_until_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1), _frame(2)]))
    spool.put(Batch("B-2", frames=[_frame(3)]))
    (tmp_path / "B-3.tmp").write_bytes(b"cut off")  # a write that never got its rename
    (tmp_path / "B-4.batch").write_bytes(b"not a batch")
    again = Spool(tmp_path, clean=True)  # a new server process
    assert not (tmp_path / "B-3.tmp").exists()
    pending = again.pending()
    assert [b.batch_id for b in pending] == ["B-1", "B-2"]
    assert [f.data for f in pending[0].frames] == [bytes([1]) * 100, bytes([2]) * 100]
    assert (tmp_path / "B-4.bad").exists()  # kept for a person to look at, not replayed
    again.remove("B-1")
    assert [b.batch_id for b in Spool(tmp_path).pending()] == ["B-2"]


def test_failed_batches_are_kept_for_a_while_not_for_ever(tmp_path: Path) -> None:
    import os

    spool = Spool(tmp_path)
    for i in (1, 2):
        spool.put(Batch(f"B-{i}", frames=[_frame(i)]), {"key_id": "k"})
        spool.set_aside(f"B-{i}")
    (tmp_path / "B-9.bad").write_bytes(b"not a batch")
    old = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    for path in (spool.failed_dir / "B-1.batch", spool.failed_dir / "B-1.json",
                 tmp_path / "B-9.bad"):
        os.utime(path, (old, old))
    assert spool.forget_failed_before(old + 1) == 2  # B-1 (with its meta) and the .bad
    assert sorted(p.name for p in spool.failed_dir.iterdir()) == ["B-2.batch", "B-2.json"]
    assert not (tmp_path / "B-9.bad").exists()
    assert spool.replay_failed() == ["B-2"]


def test_failed_batches_go_with_their_tenants_retention(tmp_path: Path) -> None:
    """A tenant keeping data 30 days does not keep its failed snapshots for the service's
    batch_status_days (30 days after acceptance): the purge deletes a failed batch whose
    every snapshot is older than its tenant's retention, as it deletes the sightings."""
    from datetime import timedelta

    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0, batch_status_days=30))
    try:
        svc.tenancy.create_tenant("acme", retention_days=30)
        svc.tenancy.create_tenant("other", retention_days=365)
        spool = svc.processor.spool
        assert spool is not None
        old = datetime.now(UTC) - timedelta(days=40)  # accepted today: back-filled footage
        frames = {"B-acme-old": ("acme", old), "B-acme-new": ("acme", datetime.now(UTC)),
                  "B-other-old": ("other", old)}
        for batch_id, (tenant, ts) in frames.items():
            spool.put(Batch(batch_id, frames=[Frame(tenant, "cam", "101", f"{batch_id}-1", ts,
                                                    data=b"x" * 100)]), {"key_id": "k"})
            spool.set_aside(batch_id)
        svc.purge_all("test")
        assert sorted(p.name for p in spool.failed_dir.iterdir()) == [
            "B-acme-new.batch", "B-acme-new.json", "B-other-old.batch", "B-other-old.json"]
    finally:
        svc.stop()


def _powell() -> list[dict[str, Any]]:
    return [{"path": photo("Colin_Powell", 1), "camera_id": "camA",
             "ts": "2024-05-02T10:00:00+02:00", "image_id": "cp-1"}]


def _accepted_then_stopped(tmp_path: Path, before_stop: Callable[[], None] = lambda: None
                           ) -> tuple[str, dict[str, str]]:
    """A server that accepts one batch (202) and stops before processing anything: the
    batch id and the keys; ``before_stop`` runs while it still runs."""
    gen = make_env(tmp_path, processing=False)
    env = next(gen)
    try:
        r = env.post_batch("cam_a", _powell())
        assert r.status_code == 202, r.text
        before_stop()
    finally:
        gen.close()
    return r.json()["batch_id"], env.keys


def test_a_restarted_server_runs_what_the_last_one_accepted(tmp_path: Path) -> None:
    items = _powell()
    batch_id, keys = _accepted_then_stopped(tmp_path)
    assert [p.stem for p in (tmp_path / "data" / "spool").glob("*.batch")] == [batch_id]
    # second server on the same data directory, processing
    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    with TestClient(create_app(service=svc, processing=True)) as client:
        again = Env(client, svc, keys)
        st = again.wait(batch_id)  # same batch id, answered by the new process
        assert st["status"] == "done" and st["processed"] == 1 and st["sightings"] == 1, st
        assert again.report().json()["header"]["total_sightings"] == 1
        # posting the same frame again is a duplicate: it was stored exactly once
        r = again.post_batch("cam_a", items)
        assert r.json()["duplicates"] == 1
    assert not list((tmp_path / "data" / "spool").glob("*.batch"))


def test_a_batch_a_power_cut_brings_back_does_not_bring_back_an_erased_person(
        tmp_path: Path) -> None:
    """A power cut can take a stored batch's done mark and the removal of its files (neither
    is fsynced): the next start restores it from the journal and runs it again. If its
    person was erased meanwhile, nothing of them comes back: the store keeps the erased
    batch's frames marked processed."""
    import shutil

    spool = tmp_path / "data" / "spool"
    # what the disk holds after the 202 and would hold again after a power cut that took
    # every later change to the segment (the done mark) and its deletion
    cut = tmp_path / "cut"
    cut.mkdir()

    def keep_segments() -> None:
        for seg in (spool / "journal").glob("*.seg"):  # not a spare being made
            shutil.copy(seg, cut / seg.name)

    batch_id, keys = _accepted_then_stopped(tmp_path, keep_segments)
    assert list(cut.glob("*.seg"))

    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    with TestClient(create_app(service=svc, processing=True),
                    client=("127.0.0.1", 50000)) as client:
        again = Env(client, svc, keys)
        st = again.wait(batch_id)
        assert st["status"] == "done" and st["sightings"] == 1, st
        visitor = again.report().json()["visitors"][0]["visitor_id"]
        r = client.delete(f"/v1/visitors/{visitor}", headers=again.auth("admin"))
        assert r.status_code == 200 and r.json()["erased"]["sightings"] == 1, r.text
    assert not list(spool.glob("*.batch"))

    for seg in cut.glob("*.seg"):  # the power cut
        shutil.copy(seg, spool / "journal" / seg.name)
    restored = [r.batch_id for seg in (spool / "journal").glob("*.seg")
                for r in journal.records(seg) if r.state == journal.LIVE]
    svc = Service(load_settings(None, data=tmp_path / "data"),
                  ServiceSettings(purge_interval_s=0))
    # restored from the journal, then found stored already (its frames): not run again
    assert batch_id in restored and not list(spool.glob("*.batch"))
    with TestClient(create_app(service=svc, processing=True),
                    client=("127.0.0.1", 50000)) as client:
        again = Env(client, svc, keys)
        assert again.wait(batch_id)["status"] == "done"  # as it was stored the first time
        header = again.report().json()["header"]
        assert header["total_sightings"] == 0 and header["unique_visitors"] == 0, header
    assert not list(spool.glob("*.batch"))


def test_a_failed_batch_is_kept_aside_and_replayed(tmp_path: Path, monkeypatch) -> None:
    """A batch that fails in a stage (here: the store is down) is not lost: its status says
    why, its file waits in spool/failed, and `revisit admin replay` + a restart store it."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    items = _powell()
    gen = make_env(tmp_path, processing=True)
    env = next(gen)
    store = env.service.runtime.store

    def down(batch: Batch) -> None:
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(store, "write", down)
    r = env.post_batch("cam_a", items)
    st = env.wait(r.json()["batch_id"])
    assert st["status"] == "failed" and "database unreachable" in st["error"]
    spool = tmp_path / "data" / "spool"
    assert [p.stem for p in (spool / "failed").glob("*.batch")] == [r.json()["batch_id"]]
    keys = env.keys
    monkeypatch.undo()
    gen.close()
    out = CliRunner().invoke(app, ["--data", str(tmp_path / "data"), "admin", "replay"])
    assert out.exit_code == 0 and "1 failed batch" in out.output
    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    with TestClient(create_app(service=svc, processing=True),
                    client=("127.0.0.1", 50000)) as client:
        again = Env(client, svc, keys)
        st = again.wait(r.json()["batch_id"])
        assert st["status"] == "done" and st["sightings"] == 1, st
    assert not list(spool.rglob("*.batch"))


def test_a_batch_stored_just_before_a_crash_is_reported_done(tmp_path: Path) -> None:
    """Killed after the store committed a batch but before its spool file was removed and
    its status marked: the next start finds its frames stored and marks it done."""
    from revisit.ingest.status import BatchStatus
    from revisit.store.testing import batch, sighting

    gen = make_env(tmp_path, processing=False)
    env = next(gen)
    frames = [_frame(1)]
    env.service.processor.spool.put(Batch("B-crash", frames=frames))  # type: ignore[union-attr]
    env.service.processor.ledger.record(BatchStatus("B-crash", "acme", "processing", 1))
    stored = batch([sighting("V-000001", frames[0].ts, "101", tenant="acme",
                             image_id=frames[0].image_id)])
    env.service.runtime.store.write(stored)  # what the killed process had committed
    gen.close()
    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    try:
        st = svc.processor.status("acme", "B-crash")
        assert st is not None and st.state == "done"
        assert not list((tmp_path / "data" / "spool").glob("*.batch"))
    finally:
        svc.stop()


def test_a_batch_the_shutdown_interrupts_runs_at_the_next_start(tmp_path: Path,
                                                                monkeypatch) -> None:
    """Stopping the server while a batch is in a stage (its model process going away)
    leaves the batch spooled, not in spool/failed with its status stuck at "processing":
    the next start stores it."""
    items = _powell()
    gen = make_env(tmp_path, processing=True)
    env = next(gen)
    processor = env.service.processor
    store = env.service.runtime.store

    def interrupted(batch: Batch) -> None:
        processor._stop.wait(30)
        raise RuntimeError("model process stopped")

    monkeypatch.setattr(store, "write", interrupted)
    r = env.post_batch("cam_a", items)
    batch_id = r.json()["batch_id"]
    processor.stop(drain_s=0.2)
    keys = env.keys
    monkeypatch.undo()
    gen.close()
    spool = tmp_path / "data" / "spool"
    assert [p.stem for p in spool.glob("*.batch")] == [batch_id]
    assert not list((spool / "failed").glob("*.batch"))
    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    with TestClient(create_app(service=svc, processing=True)) as client:
        st = Env(client, svc, keys).wait(batch_id)
        assert st["status"] == "done" and st["sightings"] == 1, st


def test_a_batch_of_duplicates_is_answered_without_waiting_for_the_store(
        tmp_path: Path, monkeypatch) -> None:
    """On DuckDB (one writer) an upload whose frames are all stored already is "done" at
    once: its status is kept in memory and written by the pipeline thread, so the 202
    never waits behind the batch being stored; it reads the same before and after, and
    a restart still finds it."""
    import threading
    import time

    items = _powell()
    gen = make_env(tmp_path, processing=True)
    env = next(gen)
    processor = env.service.processor
    env.wait(env.post_batch("cam_a", items).json()["batch_id"])
    writers: dict[str, str] = {}
    record = processor.ledger.record

    def spy(st) -> None:  # type: ignore[no-untyped-def]
        writers[st.batch_id] = threading.current_thread().name
        record(st)

    monkeypatch.setattr(processor.ledger, "record", spy)
    r = env.post_batch("cam_a", items)
    assert r.status_code == 202 and r.json()["duplicates"] == 1, r.text
    again = r.json()["batch_id"]
    st = env.client.get(f"/v1/batches/{again}", headers=env.auth("cam_a")).json()
    assert st["status"] == "done" and st["duplicates"] == 1, st
    deadline = time.monotonic() + 10
    while processor.ledger.get("acme", again) is None:
        assert time.monotonic() < deadline, "status never written"
        time.sleep(0.05)
    assert writers[again] == "batch-pipeline"
    keys = env.keys
    gen.close()
    settings = load_settings(None, data=tmp_path / "data")
    svc = Service(settings, ServiceSettings(purge_interval_s=0))
    with TestClient(create_app(service=svc, processing=False)) as client:
        st = Env(client, svc, keys).wait(again)
        assert st["status"] == "done" and st["duplicates"] == 1, st


def test_a_status_record_without_its_batch_is_not_a_batch(tmp_path: Path) -> None:
    """A writer stopped between a batch's status record and the batch itself (never
    acknowledged): not listed as queued for ever; gone at the next start."""
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    (tmp_path / "B-2.json").write_text('{"tenant": "acme"}')  # its batch never written
    spool.put_done("B-3", {"tenant": "acme"})
    assert sorted(spool.metas()) == ["B-1", "B-3"]
    Spool(tmp_path)  # another process (a CLI command) leaves it: a writer may be at it
    assert (tmp_path / "B-2.json").exists()
    Spool(tmp_path, clean=True)  # the next start of the server
    assert not (tmp_path / "B-2.json").exists()
    assert (tmp_path / "B-1.json").exists() and (tmp_path / "B-3.json").exists()


def test_the_bell_wakes_the_server_when_a_batch_is_spooled_not_before(tmp_path: Path) -> None:
    """The accept process rings after each spooled batch; the server's loop sleeps until
    then (no looking every few milliseconds), a ring nobody hears costs nothing."""
    import threading
    import time

    from revisit.api.spool import Bell

    (tmp_path / ".bell").write_text("not a pipe")  # whatever was there is replaced
    Spool(tmp_path).put(Batch("B-0", frames=[_frame(0)]))  # nobody listens: no error
    bell = Bell(tmp_path / ".bell")
    assert bell.listen()
    bell.wait(0)  # its own first ring
    t = time.monotonic()
    bell.wait(0.3)
    assert time.monotonic() - t >= 0.25  # nothing rang
    door = Spool(tmp_path)  # another process's spool
    threading.Timer(0.1, door.put, [Batch("B-1", frames=[_frame(1)])]).start()
    t = time.monotonic()
    bell.wait(10)
    assert time.monotonic() - t < 5 and (tmp_path / "B-1.batch").exists()
    bell.close()
    door.bell.ring()  # the listener gone: still no error
    door.close()
    door.bell.ring()  # a closed spool's bell opens nothing again
    assert door.bell._write is None
