"""The accept process (``service.accept_process``): camera uploads answered apart from the
server's own work.

In one server process a 202 waits for a core and for the interpreter behind the resolver's
and the store's threads, whatever the models do in their own process. With this setting
``revisit serve`` runs a second process that owns the public port: it checks camera
batches itself, writes them to the spool (what a 202 promises: the batch is on disk) and
answers; every other request goes on to the server process over a Unix socket. The server
process adopts spooled batches as its pipeline has room (:class:`BatchProcessor`,
``adopt_spool``).

What the door knows, it reads from ``<data>/door/door.json``: the active keys (by hash),
the cameras and each tenant's retention, written by the server process at start and after
every audited admin change (every change to keys, cameras and tenants is audited), and
read again here when the file changes. The door does not ask the store which frames it
holds: a snapshot posted again after it was stored is found when the batch is adopted and
counted as a duplicate in the batch's status (the 202 counts those still in the spool).
Its counters reach the server's ``/metrics`` through ``<data>/door/counts.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import multiprocessing as mp
import os
import shutil
import socket as sockets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from revisit.api.metrics import Metrics
from revisit.api.settings import ServiceSettings
from revisit.api.spool import Spool, status_meta
from revisit.config import Settings
from revisit.ingest.status import BatchStatus
from revisit.ingest.timestamps import TimeWindow
from revisit.queue.base import QueueFull
from revisit.records import Batch, Frame
from revisit.tenancy.db import DEFAULT_RETENTION_DAYS, ApiKey, Camera, Tenancy, hash_key

log = logging.getLogger(__name__)

SNAPSHOT = "door.json"
COUNTS = "counts.json"
# the door's counters that the server's /metrics adds to its own
DOOR_COUNTERS = ("frames_received", "frames_duplicate", "frames_rejected", "throttled")
# a peer address the door passes on; the server trusts it only behind the door
PEER_HEADER = "x-revisit-peer"


def door_dir(settings: Settings) -> Path:
    return settings.data / "door"


def server_socket(settings: Settings) -> Path:
    """Where the server process listens for the door: in the data folder's private door
    folder (a killed server leaves only its socket there, replaced at the next start), or,
    where that path is too long for a Unix socket, in a private temporary folder."""
    root = door_dir(settings).absolute()
    path = root / "server.sock"
    if len(os.fsencode(path)) <= 100:  # sun_path holds 108 bytes on Linux, 104 elsewhere
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        root.chmod(0o700)  # only this user reaches the server through it
        return path
    return Path(tempfile.mkdtemp(prefix="revisit-")) / "server.sock"


def remove_socket(settings: Settings, path: Path, bound: bool = True) -> None:
    """``bound``: this process listened on ``path``; if not (its port was in use), a
    socket there is another server's, running on the same data folder: left alone."""
    if bound:
        path.unlink(missing_ok=True)
    if path.parent != door_dir(settings).absolute():  # a temporary folder of its own
        shutil.rmtree(path.parent, ignore_errors=True)


# -- the server process's side --------------------------------------------------------------
def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot(tenancy: Tenancy, retention_at_door: bool) -> dict[str, Any]:
    """What the door needs to check an upload: active keys by hash, cameras, retention."""
    keys = {h: [k.key_id, k.tenant, k.role, list(k.cameras), k.name, _when(k.created_at),
                _when(k.expires_at)] for h, k in tenancy.active_keys().items()}
    cameras: dict[str, dict[str, list[str]]] = {}
    retention: dict[str, int] = {}
    for t in tenancy.tenants():
        cameras[t.tenant] = {c.camera_id: [c.location_id, c.name, c.timezone]
                             for c in tenancy.cameras(t.tenant)}
        retention[t.tenant] = t.retention_days
    return {"keys": keys, "cameras": cameras, "retention": retention,
            "retention_at_door": retention_at_door}


def write_snapshot(root: Path, data: dict[str, Any]) -> None:
    """Replace the door's snapshot whole (a rename: the door never reads half of one);
    readable by this user only, as the store is: it holds key hashes."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = root / f"{SNAPSHOT}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(root / SNAPSHOT)


class DoorCounts:
    """The door's counters added to the server's own at each scrape: by the difference
    since the last read (a restarted door counts from zero again)."""

    def __init__(self, root: Path, metrics: Metrics) -> None:
        self.path = root / COUNTS
        self.path.unlink(missing_ok=True)  # the last run's door's: counted in that run
        self.metrics = metrics
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def absorb(self) -> None:
        try:
            totals = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        with self._lock:
            for entry in totals:
                name, labels, value = entry["metric"], entry["labels"], float(entry["value"])
                if name not in DOOR_COUNTERS:
                    continue
                key = json.dumps([name, labels])
                before = self._seen.get(key, 0.0)
                delta = value - before if value >= before else value
                self._seen[key] = value
                if delta > 0:
                    counter = getattr(self.metrics, name)
                    (counter.labels(*labels) if labels else counter).inc(delta)


# -- the accept process's side ---------------------------------------------------------------
class Door:
    """The accept process's gate (:class:`revisit.api.batches.Gate`): keys and cameras
    from the snapshot, batches to the spool."""

    inline = True  # no store query: a dict lookup, and the spool's journal (one fdatasync)

    def __init__(self, settings: Settings, config: ServiceSettings) -> None:
        self.settings = settings
        self.config = config
        self.root = door_dir(settings)
        self.spool = Spool(settings.data / "spool")
        self.metrics = Metrics(lambda: float(self.spooled()),
                               tenant_labels=config.metrics_tenant_labels)
        self._snap: dict[str, Any] | None = None
        self._snap_id: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        # (tenant, image id) -> the batch that holds it, while that batch is spooled
        self._inflight: dict[tuple[str, str], str] = {}

    # snapshot
    def _current(self) -> dict[str, Any]:
        path = self.root / SNAPSHOT
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DoorNotReady("the server is starting") from None
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if ident != self._snap_id or self._snap is None:
                self._snap = json.loads(path.read_text())
                self._snap_id = ident
            return self._snap

    def authenticate(self, secret: str) -> ApiKey | None:
        if not secret or len(secret) > 200:
            return None
        row = self._current()["keys"].get(hash_key(secret))
        if row is None:
            return None
        key_id, tenant, role, cameras, name, created, expires = row
        key = ApiKey(key_id, tenant, role, tuple(cameras), name,
                     datetime.fromisoformat(created),
                     expires_at=datetime.fromisoformat(expires) if expires else None)
        return key if key.active() else None

    def window(self) -> TimeWindow:
        return self.settings.ingest.window()

    def lookups(self, tenant: str, cameras: list[str]
                ) -> tuple[dict[str, Camera], int | None]:
        snap = self._current()
        known = snap["cameras"].get(tenant, {})
        found = {c: Camera(c, *known[c]) for c in set(cameras) if c in known}
        days = snap["retention"].get(tenant) if snap["retention_at_door"] else None
        if snap["retention_at_door"] and days is None:  # not registered: the default
            days = DEFAULT_RETENTION_DAYS
        return found, days

    # the spool
    def spooled(self) -> int:
        """Batches accepted and not yet stored (the server removes each once stored)."""
        return self.spool.count()

    def full(self) -> bool:
        return self.spooled() >= self.config.queue_batches

    def submit(self, tenant: str, frames: list[Frame], refused: list[dict[str, str]],
               key_id: str) -> BatchStatus:
        """Spool the frames not already spooled; QueueFull when no room is left."""
        batch_id = "B-" + uuid.uuid4().hex[:20]
        with self._lock:
            live = {b for b in set(self._inflight.values()) if self.spool.holds(b)}
            self._inflight = {k: b for k, b in self._inflight.items() if b in live}
            fresh, seen = [], set()
            for f in frames:
                if (tenant, f.image_id) in self._inflight or f.image_id in seen:
                    continue
                seen.add(f.image_id)
                fresh.append(f)
            if fresh and (waiting := self.spool.count()) >= self.config.queue_batches:
                raise QueueFull(f"{waiting} batches accepted and not yet stored")
            status = BatchStatus(batch_id, tenant, "queued", len(frames) + len(refused),
                                 duplicates=len(frames) - len(fresh), rejected=list(refused),
                                 key_id=key_id)
            if not fresh:
                status.state = "done"
                status.finished_at = status.received_at
            for f in fresh:
                self._inflight[(tenant, f.image_id)] = batch_id
        if fresh:
            try:
                self.spool.put(Batch(batch_id=batch_id, frames=fresh), status_meta(status))
            except Exception:
                with self._lock:
                    for f in fresh:
                        self._inflight.pop((tenant, f.image_id), None)
                self.spool.remove(batch_id)
                raise
        else:  # nothing to process: its status still reads as "done", from the spool
            self.spool.put_done(batch_id, status_meta(status))
        label = self.metrics.tenant(tenant)
        self.metrics.frames_received.labels(label).inc(len(fresh))
        if status.duplicates:
            self.metrics.frames_duplicate.labels(label).inc(status.duplicates)
        return status

    def write_counts(self) -> None:
        """The door's counters, for the server's /metrics (:class:`DoorCounts`)."""
        out = []
        for family in self.metrics.registry.collect():
            name = family.name.removeprefix("revisit_")
            attr = {"batches_throttled": "throttled"}.get(name, name)
            if attr not in DOOR_COUNTERS:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out.append({"metric": attr, "labels": list(sample.labels.values()),
                                "value": sample.value})
        tmp = self.root / f"{COUNTS}.tmp"
        tmp.write_text(json.dumps(out))
        tmp.replace(self.root / COUNTS)


class DoorNotReady(RuntimeError):
    """No snapshot yet: the server process is starting."""


# hop-by-hop headers (RFC 9110 7.6.1) are not passed on; the peer header only by the door
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "te", "trailer", "transfer-encoding", "upgrade", PEER_HEADER})
# of an answer, also those the door's own HTTP server writes (two Dates: two times)
_OWN = _HOP | {"date", "server"}
# what a request target may hold as it is (RFC 3986 path characters and escapes)
_SAFE = "/%:@!$&'()*+,;=-._~"


def door_app(settings: Settings, config: ServiceSettings, socket: Path) -> Any:
    """The accept process's app: POST /v1/batches here, everything else to the server."""
    from revisit.api import errors as api_errors
    from revisit.api.batches import accept

    door = Door(settings, config)
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)),
                               base_url="http://revisit", timeout=None)

    async def publish_counts() -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(OSError):
                door.write_counts()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        door.spool.prepare()
        task = asyncio.create_task(publish_counts())
        try:
            yield
        finally:
            task.cancel()
            door.spool.close()
            with contextlib.suppress(OSError):
                door.write_counts()
            await client.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    app.state.service = door  # the error handlers read its config (Retry-After)
    api_errors.install(app)
    app.add_middleware(api_errors.ValidText)
    app.add_middleware(api_errors.HeadLimit)
    bearer = HTTPBearer(auto_error=False)

    async def camera_key(request: Request, _: Any = Depends(bearer)) -> ApiKey:
        # async: a dict lookup in the snapshot, no thread hop
        header = request.headers.get("authorization")
        if not header:
            why = ("the dashboard session only reads: a change needs an API key "
                   "(Authorization: Bearer <key>)" if "revisit_session" in request.cookies
                   else "missing API key (Authorization: Bearer <key>)")
            raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise HTTPException(401, "Authorization must be 'Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        token = config.operator_token
        if token and hmac.compare_digest(secret.strip().encode(), token.encode()):
            raise HTTPException(403, "an admin key may not do this (needs camera)")
        try:
            key = door.authenticate(secret.strip())
        except DoorNotReady:
            raise HTTPException(503, "the server is starting; retry in "
                                f"{config.retry_after_s} s",
                                headers={"Retry-After": str(config.retry_after_s)}) from None
        if key is None:
            raise HTTPException(401, "unknown or revoked API key",
                                headers={"WWW-Authenticate": "Bearer"})
        if key.role != "camera":
            article = "an" if key.role[:1] in "aeiou" else "a"
            raise HTTPException(403, f"{article} {key.role} key may not do this (needs camera)")
        return key

    @app.post("/v1/batches", status_code=202,  # unknown query parameters: 422, as there
              dependencies=[Depends(api_errors.known_query)])
    async def post_batch(request: Request, key: ApiKey = Depends(camera_key)) -> Any:
        return await accept(request, key, door)

    async def onward(request: Request) -> Response:
        # as bytes, as they came: a value past ASCII (Latin-1, which HTTP allows) is the
        # server's to answer (httpx encodes a str header as ASCII, and fails)
        headers = [(k, v) for k, v in request.headers.raw
                   if k.decode("latin-1").lower() not in _HOP]
        if request.client is not None:
            headers.append((PEER_HEADER.encode(), request.client.host.encode("latin-1")))
        # the path as the caller sent it (still percent-encoded), any byte httpx would
        # refuse escaped: the server answers it as it would without the door
        raw = quote(request.scope.get("raw_path") or request.url.path.encode(), safe=_SAFE)
        query = quote(request.scope.get("query_string", b""), safe=_SAFE + "?")
        body = "content-length" in request.headers or "transfer-encoding" in request.headers
        try:
            sent = client.build_request(request.method, raw + ("?" + query if query else ""),
                                        headers=headers,
                                        content=request.stream() if body else None)
            answer = await client.send(sent, stream=True)
        except httpx.InvalidURL as exc:
            return JSONResponse({"detail": f"malformed request target: {exc}"},
                                status_code=400)
        except ClientDisconnect:  # gone before its body was read: nobody to answer
            return Response(status_code=400)
        except httpx.TransportError:
            retry = str(config.retry_after_s)
            return JSONResponse({"detail": f"the server is not answering (starting or "
                                           f"stopping); retry in {retry} s"},
                                status_code=503, headers={"Retry-After": retry})
        response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                     background=BackgroundTask(answer.aclose))
        response.raw_headers = [(k, v) for k, v in answer.headers.raw
                                if k.decode("latin-1").lower() not in _OWN]
        return response

    return _Front(app, onward)


class _Front:
    """The door's ASGI app: uploads to its own app, every other request passed on as it
    came (not through a route: a path holding any character, a newline included, is the
    server's to answer, as it would be without the door)."""

    def __init__(self, app: FastAPI, onward: Any) -> None:
        self.app = app
        self.state = app.state
        self.onward = onward

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"] == "POST"
                                       and scope["path"] == "/v1/batches"):
            return await self.app(scope, receive, send)
        response = await self.onward(Request(scope, receive))
        await response(scope, receive, send)


def listen(host: str, port: int) -> sockets.socket:
    """The public port, bound by the server process as uvicorn binds it: a port in use
    stops ``revisit serve`` at once (not an accept process started again and again), and
    one started again takes the same socket (connections wait in its backlog meanwhile)."""
    sock = sockets.socket(sockets.AF_INET6 if ":" in host else sockets.AF_INET)
    try:
        sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _main(settings: Settings, config: ServiceSettings, host: str, port: int, socket: Path,
          log_level: str, listener: sockets.socket) -> None:
    import signal

    import uvicorn

    from revisit.api.errors import HEAD_LIMIT

    # a terminal's Ctrl-C reaches the server process, which stops this one (SIGTERM) once
    # it stops accepting; and if the server process is gone, so is the door (no uploads
    # spooled for nobody)
    os.setpgrp()
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="door-orphan", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(
        door_app(settings, config, socket), host=host, port=port, log_level=log_level,
        h11_max_incomplete_event_size=HEAD_LIMIT))
    server.run(sockets=[listener])
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the app did not start


class DoorProcess:
    """The accept process, started and stopped by the server process (``revisit serve``);
    one that dies is started again. The port is bound here (:func:`listen`: OSError when
    it is in use)."""

    def __init__(self, settings: Settings, config: ServiceSettings, host: str, port: int,
                 socket: Path, log_level: str = "info") -> None:
        self.listener = listen(host, port)
        self.args = (settings, config, host, port, socket, log_level, self.listener)
        self._proc: Any = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def _spawn(self) -> None:
        ctx = mp.get_context("spawn")
        self._proc = ctx.Process(target=_main, args=self.args, name="revisit-door",
                                 daemon=True)
        self._proc.start()

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._keep, name="door-watch", daemon=True)
        self._watch.start()

    def _keep(self) -> None:
        while not self._stop.wait(1.0):
            if self._proc is not None and not self._proc.is_alive():
                log.error("the accept process stopped (exit code %s); starting another",
                          self._proc.exitcode)
                self._spawn()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Stop accepting: uploads in progress finish (uvicorn's graceful stop)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()  # SIGTERM: uvicorn finishes the requests it has
            self._proc.join(timeout=15)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        self._proc = None
        self.listener.close()  # the port is free again


__all__ = ["COUNTS", "DOOR_COUNTERS", "PEER_HEADER", "SNAPSHOT", "Door", "DoorCounts",
           "DoorProcess", "door_app", "door_dir", "listen", "snapshot", "write_snapshot"]

