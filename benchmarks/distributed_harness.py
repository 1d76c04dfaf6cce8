"""Shared by benchmarks/chaos.py, benchmarks/distributed_throughput.py and
tests/distributed: a cheap real-face scenario, private Redis/PostgreSQL servers, a fleet of
``revisit worker`` processes, and snapshots of what a run stored.

Frames are small (160x160 JPEG): a real LFW photo (one face) or an empty grey frame (no
face), reused from a small pool under distinct image ids, so 10,000 frames run through
the real detector and embedder in minutes on 2 cores.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REVISIT_SHARED_DATA", REPO.parent / "shared" / "data"))
T0 = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
# the newest Debian-packaged PostgreSQL, else whatever is on the usual path
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/bin"))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
        return True
    except OSError:
        return False


# --- scenario ---------------------------------------------------------------------------


def start_server(env: dict[str, str], port: int, timeout: float = 90) -> subprocess.Popen:
    """``revisit serve`` on ``port`` with ``env``, returned once ``/readyz`` answers 200."""
    import httpx

    revisit = str(Path(sys.executable).parent / "revisit")
    # its log to a file (the server keeps writing there after this returns): a pipe
    # nobody reads would block the server once 64 KB of log are written
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([revisit, "serve", "--port", str(port), "--log-level",
                                 "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"revisit serve exited: {log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"revisit serve on port {port} not ready in {timeout:.0f} s")


def photo_pool(people: int, seed: int = 7, size: int = 160) -> list[tuple[str, list[bytes]]]:
    """``people`` LFW identities with >= 2 photos each, as small JPEGs."""
    import cv2

    lfw = SHARED / "lfw-dev"
    names = sorted(p.name for p in lfw.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 2)
    random.Random(seed).shuffle(names)
    pool = []
    for name in names[:people]:
        photos = []
        for path in sorted((lfw / name).iterdir())[:4]:
            img = cv2.imread(str(path))
            small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            photos.append(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        pool.append((name, photos))
    return pool


def scenario(n: int, people: int = 150, face_ratio: float = 0.6, cameras: int = 12,
             tenants: tuple[str, ...] = ("default", "acme"), seed: int = 7) -> list[Any]:
    """``n`` frames in time order over ``cameras`` cameras at 4 locations per tenant."""
    import cv2
    import numpy as np

    from revisit.records import Frame

    rng = random.Random(seed)
    pool = photo_pool(people, seed)
    blank = cv2.imencode(".jpg", np.full((160, 160, 3), 127, np.uint8))[1].tobytes()
    frames = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        cam = rng.randrange(cameras)
        if rng.random() < face_ratio:
            # each tenant sees its own half of the people; a person returns now and then
            half = pool[: len(pool) // 2] if tenant == tenants[0] else pool[len(pool) // 2:]
            _name, photos = half[min(int(rng.expovariate(1 / 25)), len(half) - 1)]
            data = photos[rng.randrange(len(photos))]
        else:
            data = blank
        frames.append(Frame(
            tenant=tenant, camera_id=f"cam{cam:02d}", location_id=f"L{cam % 4}",
            image_id=f"chaos-{i:06d}", ts=T0 + timedelta(seconds=37 * i), data=data,
        ))
    return frames


# --- services -----------------------------------------------------------------------------


@dataclass
class Redis:
    """A private redis-server with an fsync-always append-only file: survives restarts."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, "redis")

    def stop(self, hard: bool = False) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None


@dataclass
class Postgres:
    """A private PostgreSQL cluster (initdb in a temp dir), so restarts disturb no one."""

    dir: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/revisit"

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for parent in self.dir.parents:  # mkdtemp dirs are 0700: let postgres through
                if parent == Path(tempfile.gettempdir()):
                    break
                parent.chmod(parent.stat().st_mode | 0o755)
        self._run("initdb", "-D", str(self.dir / "db"), "-U", "postgres", "--auth=trust", "-E",
                  "UTF8")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=on -c synchronous_commit=on -c max_connections=200",
                  "start")
        wait_port(self.port, "postgres")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.dir / "db"), "-m", mode, "-w", "stop")


def wait_port(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start on port {port}")
        time.sleep(0.05)


# --- workers ------------------------------------------------------------------------------


class Fleet:
    """``revisit worker`` processes per stage; kill -9 and restart them at will."""

    def __init__(self, env: dict[str, str], per_stage: dict[str, int], log_dir: Path) -> None:
        self.env = env
        self.per_stage = per_stage
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.kills = 0
        self.restarts = 0

    def spawn(self, stage: str, i: int) -> None:
        log = open(self.log_dir / f"{stage}-{i}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[(stage, i)] = subprocess.Popen(
            [str(Path(sys.executable).with_name("revisit")), "worker", "--stage", stage],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )

    def start(self) -> None:
        for stage, n in self.per_stage.items():
            for i in range(n):
                self.spawn(stage, i)

    def kill_random(self, rng: random.Random) -> str:
        key = rng.choice(sorted(self.procs))
        self.procs[key].kill()
        self.procs[key].wait()
        self.kills += 1
        return f"{key[0]}-{key[1]}"

    def restart_dead(self) -> None:
        for key, p in list(self.procs.items()):
            if p.poll() is not None:
                self.spawn(*key)
                self.restarts += 1

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def frozen_source(work: Path) -> Path:
    """A copy of ``src/`` for the worker processes: in a working tree others are editing,
    workers restarted mid-run must all run the same code."""
    dest = work / "src-snapshot"
    if not dest.exists():
        shutil.copytree(REPO / "src", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def consolidate_all(store: Any, store_url: str, tenants: tuple[str, ...]) -> int:
    """The consolidation job (identity.consolidate) the embedded default runs at the end of
    an ingest; in distributed mode it is a periodic job over the shared store."""
    from revisit.config import load_settings
    from revisit.identity.consolidate import consolidate

    settings = load_settings(None, store_url=store_url)
    if not settings.identity.consolidate:
        return 0
    return sum(len(consolidate(settings, store, None, t)) for t in tenants)


def worker_env(queue_url: str, store_url: str, data: Path, threads: int = 1,
               source: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    env.update({
        "REVISIT_QUEUE_URL": queue_url, "REVISIT_STORE_URL": store_url,
        "REVISIT_DATA": str(data), "REVISIT_PIPELINE__THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
    })
    return env


# --- snapshots ----------------------------------------------------------------------------

REPORT_DAYS = (date(2024, 3, 1), date(2024, 3, 31))


def snapshot(store: Any, tenants: tuple[str, ...] = ("default", "acme")) -> dict[str, Any]:
    """Everything a run must reproduce: sightings and the report, per tenant."""
    from revisit.report.query import ReportQuery, SightingQuery

    out: dict[str, Any] = {}
    for t in tenants:
        q = ReportQuery(*REPORT_DAYS, tenant=t)
        h = store.report_header(q)
        out[t] = {
            "sightings": sorted(
                (s["face_image_id"], s["face_id"], s["image_id"], s["camera_id"],
                 s["location_id"], s["ts"])
                for s in store.sightings(SightingQuery(tenant=t))
            ),
            "header": (h.unique_visitors, h.total_visits, h.total_sightings),
            "rows": [
                (r.visitor_id, r.total_appearances, r.locations_visited,
                 tuple(sorted(r.visits_per_location.items())), r.sightings)
                for r in store.report_rows(q)
            ],
            "frames": store.stats(t)["frames"],
        }
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What differs between two snapshots (empty dict: identical)."""
    out: dict[str, Any] = {}
    for t in sorted(set(a) | set(b)):
        x, y = a.get(t, {}), b.get(t, {})
        sa = {s[0]: s for s in x.get("sightings", [])}
        sb = {s[0]: s for s in y.get("sightings", [])}
        d = {
            "missing_sightings": len(set(sa) - set(sb)),
            "extra_sightings": len(set(sb) - set(sa)),
            "different_visitor": sum(1 for k in set(sa) & set(sb) if sa[k] != sb[k]),
            "header": None if x.get("header") == y.get("header") else
            [x.get("header"), y.get("header")],
            "rows_differ": x.get("rows") != y.get("rows"),
            "frames": None if x.get("frames") == y.get("frames") else
            [x.get("frames"), y.get("frames")],
        }
        if any(v for v in d.values()):
            out[t] = d
    return out


def wait_stored(store: Any, expected: int, tenants: tuple[str, ...], timeout: float,
                tick: Any = None) -> float:
    """Poll until every frame is stored; returns seconds waited. ``tick()`` runs each poll."""
    t0 = time.monotonic()
    while True:
        got = sum(store.stats(t)["frames"] for t in tenants)
        if got >= expected:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"only {got}/{expected} frames stored after {timeout:.0f} s")
        if tick is not None:
            tick()
        time.sleep(0.5)
