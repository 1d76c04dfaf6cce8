"""The accept process (``service.accept_process``): uploads checked against the server's
snapshot and spooled; the server takes them from the spool; every other request passes
through to the server over its Unix socket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.api.conftest import Env, make_env, pg_store_url, photo

from revisit.api.door import door_app, door_dir
from revisit.api.service import Service

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TS = "2024-05-02T10:00:00+02:00"


def _item(image_id: str, camera: str = "camA", person: str = "Colin_Powell",
          n: int = 1) -> dict[str, Any]:
    return {"path": photo(person, n), "camera_id": camera, "ts": TS, "image_id": image_id}


def _spooled(svc: Service) -> list[str]:
    return sorted(p.stem for p in (svc.settings.data / "spool").glob("*.batch"))


class _Socket:
    """The server's app on a Unix socket, as ``revisit serve`` runs it behind the door."""

    def __init__(self, app: Any, path: Path) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, uds=str(path), log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Socket:
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.02)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(params=["duckdb", "postgres"])
def behind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Env, Env, Path]]:
    """(the server, no processing; the door in front of it; the server's socket path), on
    each store (statuses: deferred in memory on DuckDB, recorded at once on PostgreSQL)."""
    with contextlib.ExitStack() as stack:
        settings = ({"store_url": stack.enter_context(pg_store_url(tmp_path))}
                    if request.param == "postgres" else {})
        gen = make_env(tmp_path, processing=False, settings=settings, behind_door=True,
                       queue_batches=2)
        server = next(gen)
        stack.callback(gen.close)
        sock = tmp_path / "s.sock"
        svc = server.service
        with TestClient(door_app(svc.settings, svc.config, sock),
                        client=("127.0.0.1", 50001)) as client:
            yield server, Env(client, svc, server.keys), sock


def test_the_door_checks_and_spools_uploads_against_the_servers_snapshot(behind) -> None:
    server, door, _ = behind
    assert json.loads((door_dir(server.service.settings) / "door.json").read_text())["keys"]
    r = door.post_batch("cam_a", [_item("cp-1")])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["frames"] == 1 and body["duplicates"] == 0
    assert _spooled(server.service) == [body["batch_id"]]
    meta = json.loads((server.service.settings.data / "spool" / f"{body['batch_id']}.json")
                      .read_text())
    assert meta["tenant"] == "acme" and meta["frames"] == 1
    # the same checks and answers as the server's own upload
    door.keys["nobody"] = "rvk_not-a-key"
    assert door.post_batch("nobody", [_item("x")]).status_code == 401
    r = door.post_batch("analyst", [_item("x")])
    assert r.status_code == 403 and "needs camera" in r.json()["detail"]
    r = door.post_batch("cam_a", [_item("x", camera="camB")])
    assert r.status_code == 403 and "camB" in r.json()["detail"]
    r = door.post_batch("cam_a", [{**_item("y"), "ts": "not a time"}])
    assert r.status_code == 422
    r = door.client.post("/v1/batches?camera=camA", headers=door.auth("cam_a"))
    assert r.status_code == 422 and "'camera'" in r.json()["detail"], r.text
    # the frame still spooled, posted again: a duplicate, answered done without a file
    r = door.post_batch("cam_a", [_item("cp-1")])
    assert r.status_code == 202 and r.json()["duplicates"] == 1 and r.json()["status"] == "done"
    r = door.post_batch("other_cam", [_item("x", camera="camX")])
    assert r.status_code == 202  # another tenant's camera key, its own camera
    # queue_batches = 2 spooled: the next new batch is told to retry
    r = door.post_batch("cam_a", [_item("cp-2", n=2)])
    assert r.status_code == 429 and r.headers["retry-after"]
    assert len(_spooled(server.service)) == 2


def test_a_revoked_key_and_a_new_camera_reach_the_door_at_once(behind) -> None:
    server, door, _ = behind
    t = server.service.tenancy
    t.add_camera("acme", "camC", "101")
    key, secret = t.create_key("acme", "camera", ["camC"])
    door.keys["cam_c"] = secret
    assert door.post_batch("cam_c", [_item("c-1", camera="camC")]).status_code == 202
    t.revoke_key("acme", key.key_id)
    r = door.post_batch("cam_c", [_item("c-2", camera="camC")])
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_other_requests_pass_through_to_the_server(behind) -> None:
    server, door, sock = behind
    batch_id = door.post_batch("cam_a", [_item("cp-1")]).json()["batch_id"]
    r = door.client.get(f"/v1/batches/{batch_id}", headers=door.auth("cam_a"))
    assert r.status_code == 503 and r.headers["retry-after"]  # the server is not up
    app = server.client.app
    with _Socket(app, sock):
        # spooled, not taken yet (no processing here): read from the spool's record
        r = door.client.get(f"/v1/batches/{batch_id}", headers=door.auth("cam_a"))
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        listed = door.client.get("/v1/batches", headers=door.auth("admin")).json()
        assert [b["batch_id"] for b in listed["batches"]] == [batch_id]
        other = door.client.get(f"/v1/batches/{batch_id}", headers=door.auth("other_admin"))
        assert other.status_code == 404  # another tenant's batch
        # the caller's address is passed on: monitoring answers this machine only
        assert door.client.get("/metrics").status_code == 200
        far = TestClient(door.client.app, client=("10.1.2.3", 50002))
        assert far.get("/metrics").status_code == 403
        # a change with a body: a key made through the door works at the door at once
        r = door.client.post("/v1/admin/keys", headers=door.auth("admin"),
                             json={"role": "camera", "cameras": ["camB"]})
        assert r.status_code == 201, r.text
        door.keys["new"] = r.json()["key"]
        r = door.post_batch("new", [_item("b-1", camera="camB")])
        assert r.status_code == 202, r.text
        # a report streams through
        r = door.client.get("/v1/reports/unique-visitors", headers=door.auth("analyst"),
                            params={"from": "2024-01-01", "to": "2024-12-31",
                                    "format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        assert r.text.splitlines()[0].count(",") >= 3, r.text  # a CSV header row


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def processing(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Env]]:
    """A processing server (real models) behind the door, on each store: DuckDB defers a
    taken batch's status (one writer), PostgreSQL records it at once."""
    tmp = tmp_path_factory.mktemp(f"door-{request.param}")
    with contextlib.ExitStack() as stack:
        settings = ({"store_url": stack.enter_context(pg_store_url(tmp))}
                    if request.param == "postgres" else {})
        gen = make_env(tmp, processing=True, settings=settings, behind_door=True)
        server = next(gen)
        stack.callback(gen.close)
        svc = server.service
        with TestClient(door_app(svc.settings, svc.config, svc.settings.data / "x.sock")) as c:
            yield server, Env(c, svc, server.keys)


def test_the_server_takes_spooled_batches_and_finds_stored_snapshots(processing) -> None:
    server, door = processing
    items = [_item("cp-1"), _item("gb-1", person="George_W_Bush")]
    batch_id = door.post_batch("cam_a", items).json()["batch_id"]
    st = server.wait(batch_id)
    assert st["status"] == "done" and st["processed"] == 2 and st["sightings"] == 2, st
    assert server.report().json()["header"]["total_sightings"] == 2
    assert not _spooled(server.service)
    # posted again once stored: the door cannot know; the server counts them duplicates
    again = door.post_batch("cam_a", items).json()
    assert again["duplicates"] == 0 and again["status"] == "queued"
    st = server.wait(again["batch_id"])
    assert st["status"] == "done" and st["duplicates"] == 2 and st["processed"] == 0, st
    assert server.report().json()["header"]["total_sightings"] == 2
    # the door's counters are in the server's /metrics
    door.client.app.state.service.write_counts()
    text = server.client.get("/metrics", headers={"x-revisit-peer": "127.0.0.1"}).text
    received = [ln for ln in text.splitlines()
                if ln.startswith('revisit_frames_received_total{tenant="all"}')]
    assert received and float(received[0].split()[-1]) == 4.0


@pytest.mark.parametrize("door", ["default", "false"])
def test_revisit_serve_with_and_without_the_accept_process(tmp_path: Path, door: str) -> None:
    from benchmarks.distributed_harness import free_port

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "REVISIT_SERVICE_ACCEPT_PROCESS"}
    env.update({"REVISIT_PIPELINE__THREADS": "1", "REVISIT_PRIVACY__RETENTION_AT_DOOR": "false"})
    if door != "default":
        env["REVISIT_SERVICE_ACCEPT_PROCESS"] = door

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "revisit.cli", "--data", str(data), *args],
                              env=env, check=True, capture_output=True, text=True).stdout

    cli("admin", "add-tenant", "acme")
    cli("admin", "add-location", "--tenant", "acme", "101")
    cli("admin", "add-camera", "--tenant", "acme", "camA", "--location", "101")
    key = cli("admin", "add-key", "--tenant", "acme", "--role", "camera",
              "--cameras", "camA").strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "revisit.cli", "--data", str(data), "serve",
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("revisit serve did not get ready")
        # the server's socket, in the data folder's private door folder
        sock = data / "door" / "server.sock"
        assert sock.is_socket() == (door == "default")
        if door == "default":
            assert (sock.parent.stat().st_mode & 0o777) == 0o700
        meta = [{"file": "a.jpg", "camera_id": "camA", "ts": TS, "image_id": "cp-1"}]
        r = httpx.post(url + "/v1/batches", headers={"Authorization": f"Bearer {key}"},
                       data={"metadata": json.dumps(meta)},
                       files=[("images", ("a.jpg", photo("Colin_Powell", 1).read_bytes(),
                                          "image/jpeg"))])
        assert r.status_code == 202, r.text
        status_url = url + r.json()["status_url"]
        end = time.monotonic() + 90
        while time.monotonic() < end:
            st = httpx.get(status_url, headers={"Authorization": f"Bearer {key}"}).json()
            if st["status"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert st["status"] == "done" and st["sightings"] == 1, st
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert not (data / "door" / "server.sock").exists()  # removed at the stop
    # the server wrote the door's snapshot: the accept process is the default
    assert (data / "door" / "door.json").is_file() == (door == "default")
    # the accept process went with the server: the port is free again
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)


def test_a_snapshot_spooled_twice_is_stored_once(processing) -> None:
    """A door restarted while a batch waits no longer knows it: the same frame can be
    spooled in two batches; the server stores it once and counts the other a duplicate."""
    from revisit.api.spool import Spool
    from revisit.records import Batch, Frame

    server, _ = processing
    svc = server.service
    frame = Frame(tenant="acme", camera_id="camA", location_id="101", image_id="twice-1",
                  ts=datetime(2024, 5, 3, 9, tzinfo=UTC),
                  data=photo("George_W_Bush", 3).read_bytes())
    spool = Spool(svc.settings.data / "spool", clean=False)
    for batch_id in ("B-twice-a", "B-twice-b"):
        spool.put(Batch(batch_id, frames=[frame]), {"tenant": "acme", "frames": 1})
    a, b = server.wait("B-twice-a", key="admin"), server.wait("B-twice-b", key="admin")
    assert sorted([a["sightings"], b["sightings"]]) == [0, 1], (a, b)
    assert sorted([a["duplicates"], b["duplicates"]]) == [0, 1], (a, b)
    r = server.report(**{"from": "2024-05-03", "to": "2024-05-03"}).json()
    assert r["header"]["total_sightings"] == 1


def _door_batch(batch_id: str, image_id: str) -> tuple[Any, dict[str, Any]]:
    """A batch as the door spools it (its meta names the tenant and the key)."""
    from revisit.records import Batch, Frame

    frame = Frame(tenant="acme", camera_id="camA", location_id="101", image_id=image_id,
                  ts=datetime(2024, 5, 3, 9, tzinfo=UTC),
                  data=photo("George_W_Bush", 3).read_bytes())
    return Batch(batch_id, frames=[frame]), {
        "tenant": "acme", "key_id": "k", "frames": 1, "duplicates": 0, "rejected": [],
        "received_at": datetime.now(UTC).replace(tzinfo=None).isoformat()}


def test_a_door_batch_already_stored_when_the_server_restarts_keeps_its_status(
        behind) -> None:
    """The door spooled a snapshot stored before (it cannot know) and the server stopped
    before taking it: at the next start its status is recorded (done, a duplicate), not
    left unknown (a 404 after a 202)."""
    from revisit.api.processing import BatchProcessor
    from revisit.api.spool import Spool
    from revisit.records import Batch

    server, _, _ = behind
    svc = server.service
    stored, _ = _door_batch("B-first", "again-1")
    svc.runtime.store.write(Batch("B-first", frames=stored.frames))
    assert svc.runtime.store.known_frames("acme", ["again-1"]) == {"again-1"}
    spool = Spool(svc.settings.data / "spool", clean=False)
    spool.put(*_door_batch("B-again", "again-1"))
    # the next start
    p = BatchProcessor(svc.runtime, svc.metrics, svc.write_lock, 10,
                       spool=Spool(svc.settings.data / "spool"), adopt_spool=True)
    st = p.status("acme", "B-again")
    assert st is not None and st.state == "done" and st.duplicates == 1, st
    assert not _spooled(svc)


def test_a_taken_batch_is_listed_as_processing_not_as_spooled(behind) -> None:
    """Once the pipeline takes a spooled batch its status is the store's: the spool's
    record of it (still there until it is stored) must not list it as queued."""
    server, door, _ = behind
    batch_id = door.post_batch("cam_a", [_item("cp-1")]).json()["batch_id"]
    p = server.service.processor
    taken = p._adopt()  # as the pipeline does
    assert taken is not None and taken.batch_id == batch_id
    p._mark_processing(batch_id)
    assert p.status("acme", batch_id).state == "processing"
    assert [(st.batch_id, st.state) for st in p.recent("acme")] == [(batch_id, "processing")]
    assert p.recent("acme", state="queued") == []


def _serve_on_a_taken_port(data: Path) -> subprocess.CompletedProcess[str]:
    """``revisit serve`` on a port another socket holds: it must stop, not run on."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "REVISIT_SERVICE_ACCEPT_PROCESS"}
    try:
        return subprocess.run(
            [sys.executable, "-m", "revisit.cli", "--data", str(data), "serve",
             "--port", str(port), "--log-level", "warning"],
            env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("revisit serve kept running on a port in use") from exc
    finally:
        taken.close()


def test_revisit_serve_on_a_port_in_use_stops_with_an_error(tmp_path: Path) -> None:
    """The port is bound before the accept process starts: one in use is an error, not an
    accept process started again every second by a server that answers nobody."""
    proc = _serve_on_a_taken_port(tmp_path / "data")
    assert proc.returncode != 0 and "in use" in proc.stderr, proc.stderr[-2000:]


def test_an_answer_passed_on_has_one_date_and_one_server_header(behind, tmp_path: Path
                                                                ) -> None:
    """The door's own HTTP server writes Date and Server: the server process's are not
    passed on as well (a second Date, a field that is one value, with another time)."""
    server, door, sock = behind
    front = tmp_path / "door.sock"
    with _Socket(server.client.app, sock), _Socket(door.client.app, front), \
            httpx.Client(transport=httpx.HTTPTransport(uds=str(front))) as c:
        r = c.get("http://door/healthz")
    assert r.status_code == 200, r.text
    assert len(r.headers.get_list("date")) == 1, r.headers
    assert len(r.headers.get_list("server")) == 1, r.headers


def test_the_last_runs_door_counters_are_not_counted_again(tmp_path: Path) -> None:
    """counts.json left by the accept process of the last run is not this run's: read
    before this run's door first writes it, its totals would count again (a counter reset
    with the server process, then jumping by the last run's uploads)."""
    data = tmp_path / "data" / "door"
    data.mkdir(parents=True)
    (data / "counts.json").write_text(json.dumps(
        [{"metric": "frames_received", "labels": ["all"], "value": 500.0}]))
    gen = make_env(tmp_path, processing=False, behind_door=True)
    server = next(gen)
    try:
        text = server.client.get("/metrics", headers={"x-revisit-peer": "127.0.0.1"}).text
        received = [ln for ln in text.splitlines()
                    if ln.startswith('revisit_frames_received_total{tenant="all"}')]
        assert not received or float(received[0].split()[-1]) == 0.0, received
    finally:
        gen.close()


def test_a_failed_batch_replayed_while_serving_is_not_read_as_failed(behind) -> None:
    """Behind the door the server takes what `revisit admin replay` puts back in the spool
    at once: its status is queued, then processing, not still the failure it was."""
    from revisit.api.spool import Spool

    server, door, _ = behind
    batch_id = door.post_batch("cam_a", [_item("cp-1")]).json()["batch_id"]
    p = server.service.processor
    b = p._adopt()  # as the pipeline does, and the batch fails
    p._mark_processing(batch_id)
    p.ledger.failed("acme", batch_id, "detect: boom")
    p._failed.add(batch_id)
    p._done(b)
    assert p.status("acme", batch_id).state == "failed"
    assert Spool(server.service.settings.data / "spool", clean=False).replay_failed() == [
        batch_id]
    assert p._adopt().batch_id == batch_id
    st = p.status("acme", batch_id)
    assert st.state == "queued" and not st.error, st
    p._mark_processing(batch_id)
    st = p.status("acme", batch_id)
    assert st.state == "processing" and not st.error, st


def test_odd_requests_passed_on_are_answered_not_500(behind) -> None:
    """Found by the schema fuzzer: control characters in a path, and a caller gone before
    its body was sent, made the door fail (500, and a traceback in its log)."""
    import asyncio

    server, door, sock = behind
    with _Socket(server.client.app, sock):
        for path in ("/v1/batches/%03x", "/v1/reports/unique-visitors?from=%0b"):
            r = door.client.get(path, headers=door.auth("admin"))
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        # a newline inside a path (the fuzzer again): the server's answer, not the door's
        # own "Not Found" (its routes did not match such a path)
        r = door.client.get("/v1/batches/a%0Ab", headers=door.auth("admin"))
        assert r.status_code == 404 and "no batch" in r.json()["detail"], r.text
        sent: list[dict[str, Any]] = []
        parts = [{"type": "http.request", "body": b'{"role": "cam', "more_body": True},
                 {"type": "http.disconnect"}]

        async def receive() -> dict[str, Any]:
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/admin/keys",
                 "raw_path": b"/v1/admin/keys", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"door"), (b"content-length", b"100"),
                             (b"content-type", b"application/json"),
                             (b"authorization", f"Bearer {door.keys['admin']}".encode())],
                 "client": ("127.0.0.1", 50003), "server": ("127.0.0.1", 80)}
        asyncio.run(door.client.app(scope, receive, send))
        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert starts and starts[0]["status"] < 500, sent


def test_a_header_not_ascii_is_passed_on_as_sent(behind) -> None:
    """A header value with a byte past ASCII (Latin-1, as HTTP allows) reaches the server as
    it came, and its answer comes back: the door failed on it (500), the server without the
    door answers it."""
    server, door, sock = behind
    with _Socket(server.client.app, sock):
        r = door.client.get("/healthz", headers={b"x-note": b"caf\xe9"})
        assert r.status_code == 200, r.text
        r = door.client.get(f"/v1/batches/B-{'0' * 20}", headers={
            b"authorization": f"Bearer {door.keys['admin']}".encode(),
            b"user-agent": "kamera/1 (Zürich)".encode()})
        assert r.status_code == 404 and "no batch" in r.json()["detail"], r.text


def test_a_second_serve_on_a_port_in_use_leaves_the_running_servers_socket(
        tmp_path: Path) -> None:
    """`revisit serve` started again on the same data folder and port stops with an error,
    and does not delete the socket of the server already running there (its accept process
    could then reach it no more: every request but an upload answered 503)."""
    import socket

    from revisit.config import Settings

    data = tmp_path / "data"
    path = door_dir(Settings(data=data)).absolute() / "server.sock"
    path.parent.mkdir(parents=True, mode=0o700)
    running = socket.socket(socket.AF_UNIX)
    running.bind(str(path))
    running.listen()
    try:
        proc = _serve_on_a_taken_port(data)
    finally:
        running.close()
    assert proc.returncode != 0 and "in use" in proc.stderr, proc.stderr[-2000:]
    assert path.is_socket()


def test_only_changes_the_door_checks_rewrite_its_snapshot(behind) -> None:
    """Every audit entry used to rebuild the snapshot (a watch-list alert, a read of the
    known people): only keys, cameras, locations and tenants matter to the door."""
    server, _, _ = behind
    t = server.service.tenancy
    path = door_dir(server.service.settings) / "door.json"
    seen: list[int] = []
    real = server.service.update_door

    def counted() -> None:
        seen.append(1)
        real()

    server.service.update_door = counted  # type: ignore[method-assign]
    t.audit("acme", "key:x", "known.list", {})
    t.audit("acme", "key:x", "watchlist.alert", {"visitor": "v"})
    assert seen == []
    before = json.loads(path.read_text())
    t.add_camera("acme", "camZ", "101")
    assert seen == [1]
    assert "camZ" in json.loads(path.read_text())["cameras"]["acme"]
    assert "camZ" not in before["cameras"]["acme"]


@pytest.mark.services
def test_a_key_revoked_through_another_replica_is_refused_at_the_door(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a shared PostgreSQL store a revocation through another replica is not audited in
    this server process: only its periodic refresh of the snapshot (``DOOR_REFRESH_S``, 5 s;
    shortened here) brings it to this server's door."""
    from revisit.api import service as service_module
    from revisit.api.settings import ServiceSettings
    from revisit.config import load_settings

    monkeypatch.setattr(service_module, "DOOR_REFRESH_S", 0.2)
    with pg_store_url(tmp_path) as url:
        gen = make_env(tmp_path / "a", processing=False, settings={"store_url": url},
                       behind_door=True)
        server = next(gen)
        try:
            svc = server.service
            with TestClient(door_app(svc.settings, svc.config, tmp_path / "s.sock")) as c:
                door = Env(c, svc, server.keys)
                assert door.post_batch("cam_a", [_item("r-1")]).status_code == 202
                other = Service(load_settings(None, data=tmp_path / "b", store_url=url),
                                ServiceSettings(purge_interval_s=0))
                try:
                    key = other.tenancy.authenticate(server.keys["cam_a"])
                    assert key is not None
                    other.tenancy.revoke_key("acme", key.key_id)
                finally:
                    other.stop()
                end = time.monotonic() + service_module.DOOR_REFRESH_S + 2
                while (r := door.post_batch("cam_a", [_item("r-1")])).status_code == 202 \
                        and time.monotonic() < end:
                    time.sleep(0.05)
                assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
        finally:
            gen.close()
