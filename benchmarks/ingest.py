"""The HTTP batch API under load from separate processes on loopback.

    .venv/bin/python benchmarks/ingest.py [--clients 4] [--seconds 60] [--batch 8]

Starts ``revisit serve`` on a fresh data directory (one tenant, 4 cameras, a camera key,
set up with ``revisit admin``), then, from ``--clients`` load processes (httpx):

1. saturation: every client posts camera batches of ``--batch`` CCTV-like frames
   (benchmarks/scenes.py) back to back; the server accepts what its bounded queue holds
   and answers 429 beyond it. The processing rate (frames/s the pipeline completes,
   from /metrics) is the sustainable ingest rate.
2. 2x overload: the clients together offer twice that rate, open loop (a batch every
   1/rate s whatever the answers), for the same time.

Reported per phase: frames/s accepted (202) and processed, 429 share, p50/p99 request
latency of 202 and 429 answers, and the server's RSS (sampled every 0.25 s: start, max,
end) to show memory stays bounded. Writes benchmarks/results/ingest.json.

``--probe`` measures what the models' work does to answers at a camera's pace: one probe
process (nice 0) posts a batch every 0.25 s, first to the idle server, then while the
``--clients`` feed, open loop, about what the pipeline processes (its rate measured by a
15 s saturation first, or ``--feed-fps``), so the models run flat out; reports the probe's p50/p90/p99 of
202 and 429 answers. Writes ``ingest_probe.json`` (``ingest_probe_one_process.json`` with
``--one-process``: without the accept process, ``service.accept_process``, in front).

``--broker redis`` measures the accept path alone: ``revisit serve`` publishing to Redis
(the local server, database 9, emptied first) while a drain process takes the frames
queue as fast as detect workers with spare capacity would (reads and acknowledges,
discards), one saturation phase; adds the server's CPU seconds, hence frames/s accepted
per core. ``--frame-kb`` re-encodes the frames to about that size (the issue's 100 KB).
Writes ``ingest_broker_redis.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).parent))
from distributed_harness import start_server
from scenes import build_scenes

RESULTS = Path(__file__).parent / "results"
START = datetime(2024, 3, 1, 9, tzinfo=UTC)
REVISIT = str(Path(sys.executable).parent / "revisit")


_WORKERS = itertools.count()  # client processes of this run, each with its own frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(data: Path, cameras: int) -> str:
    env = {**os.environ, "REVISIT_DATA": str(data)}

    def admin(*args: str) -> str:
        return subprocess.run([REVISIT, "admin", *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    admin("add-tenant", "bench")
    admin("add-location", "-t", "bench", "L1")
    cams = [f"cam{i}" for i in range(cameras)]
    for c in cams:
        admin("add-camera", "-t", "bench", c, "--location", "L1")
    return admin("add-key", "-t", "bench", "--role", "camera", "--cameras", ",".join(cams))


def client(url: str, key: str, frames: list[bytes], batch: int, cameras: int, seconds: float,
           rate: float, worker: int, out: mp.Queue, nice: int = 0) -> None:
    """Posts batches until ``seconds`` pass; ``rate`` batches/s (0 = back to back)."""
    import httpx

    if nice:
        os.nice(nice)
    headers = {"Authorization": f"Bearer {key}"}
    results = []
    n = 0
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            now = time.perf_counter()
            if now - start >= seconds:
                break
            if rate > 0:
                due = start + n / rate
                if due > now:
                    time.sleep(due - now)
            meta, files = [], []
            for i in range(batch):
                k = (worker * 7919 + n * batch + i) % len(frames)
                name = f"f{i}.jpg"
                # every frame of a camera at its own moment, as a camera takes them: clients
                # and frames of a batch share cameras, so client, batch and frame all count
                # (each client process of a run has its own worker number, so no phase
                # posts another's frames again: those would be answered as duplicates)
                ts = (START + timedelta(days=worker, seconds=10 * n, milliseconds=i)).isoformat()
                meta.append({"file": name, "camera_id": f"cam{(worker + i) % cameras}", "ts": ts,
                             "image_id": f"w{worker}-b{n}-{i}"})
                files.append(("images", (name, frames[k], "image/jpeg")))
            t = time.perf_counter()
            r = http.post("/v1/batches", data={"metadata": json.dumps(meta)}, files=files,
                          headers=headers)
            results.append((r.status_code, time.perf_counter() - t, batch))
            n += 1
    out.put(results)


def drain(queue_url: str, seconds: float, out: mp.Queue) -> None:
    """Take the frames queue as fast as possible (an idle detect stage would)."""
    from revisit.distributed.topology import QUEUE_BOUND, QUEUE_IN
    from revisit.queue.factory import open_queue

    q = open_queue(queue_url, QUEUE_IN["detect"], consumer="drain", maxsize=QUEUE_BOUND)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        d = q.get(timeout=0.5)
        if d is not None:
            n += len(d.batch.frames)
            d.ack()
    q.close()
    out.put(n)


def _sized(frames: list[bytes], kb: int) -> list[bytes]:
    """The frames enlarged and re-encoded to about ``kb`` KB each."""
    import cv2
    import numpy as np

    out = []
    for data in frames:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        scale = 1.0
        for _ in range(12):
            big = cv2.resize(img, None, fx=scale, fy=scale)
            jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
            if abs(len(jpg) - kb * 1024) < 0.1 * kb * 1024:
                break
            scale *= (kb * 1024 / len(jpg)) ** 0.5
        out.append(jpg)
    return out


def _stop(srv: subprocess.Popen) -> None:
    srv.terminate()
    try:
        srv.wait(30)
    except subprocess.TimeoutExpired:
        srv.kill()


def processed(url: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    # per tenant or "all" (service.metrics_tenant_labels)
    m = re.findall(r'^revisit_frames_processed_total\{tenant="[^"]*"\} ([0-9.e+]+)$', text, re.M)
    return sum(float(x) for x in m)


def _pct_ms(xs: list[float], p: float) -> float | None:
    """The ``p``-th percentile of latencies ``xs`` (s) in ms; None for none."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else None


def phase(url: str, key: str, frames: list[bytes], args: argparse.Namespace, rate: float,
          server: psutil.Process) -> dict:
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:  # the server and its model process
                procs = [server, *server.children(recursive=True)]
                rss.append(sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    p0 = processed(url)
    q: mp.Queue = mp.Queue()
    per_client = rate / args.clients / args.batch if rate else 0.0
    procs = [mp.Process(target=client, args=(url, key, frames, args.batch, args.cameras,
                                             args.seconds, per_client, next(_WORKERS), q,
                                             args.client_nice))
             for _ in range(args.clients)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [r for _ in procs for r in q.get()]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t
    p1 = processed(url)
    stop.set()
    sampler.join()

    def pct(xs: list[float], p: float) -> float:
        return _pct_ms(xs, p) or 0.0

    ok = [lat for code, lat, _ in results if code == 202]
    busy = [lat for code, lat, _ in results if code == 429]
    other = sorted({code for code, _, _ in results if code not in (202, 429)})
    return {
        "offered_frames_per_s": rate or None, "seconds": wall,
        "requests": len(results), "accepted_batches": len(ok), "throttled_batches": len(busy),
        "other_status": other,
        "accepted_frames_per_s": sum(b for c, _, b in results if c == 202) / wall,
        "processed_frames_per_s": (p1 - p0) / wall,
        "share_429": len(busy) / max(1, len(results)),
        "p50_ms_202": pct(ok, 50), "p99_ms_202": pct(ok, 99),
        "p50_ms_429": pct(busy, 50), "p99_ms_429": pct(busy, 99),
        "rss_mb_start": rss[0] if rss else 0.0, "rss_mb_max": max(rss, default=0.0),
        "rss_mb_end": rss[-1] if rss else 0.0,
    }


def probe_phase(url: str, key: str, frames: list[bytes], args: argparse.Namespace,
                feed_rate: float) -> dict:
    """The probe's answers while ``args.clients`` feed ``feed_rate`` frames/s in all."""
    q: mp.Queue = mp.Queue()
    per_client = feed_rate / args.clients / args.batch
    feeders = [mp.Process(target=client, args=(url, key, frames, args.batch, args.cameras,
                                                args.seconds + 10, per_client,
                                                next(_WORKERS), q, args.client_nice))
               for _ in range(args.clients)] if feed_rate else []
    for p in feeders:
        p.start()
    if feeders:
        time.sleep(5)  # the queue and the models at their steady state
    probe_q: mp.Queue = mp.Queue()
    probe = mp.Process(target=client, args=(url, key, frames, args.batch, args.cameras,
                                            args.seconds, 4.0, next(_WORKERS), probe_q, 0))
    probe.start()
    results = probe_q.get()
    probe.join()
    for _ in feeders:
        q.get()
    for p in feeders:
        p.join()

    def pct(xs: list[float], p: float) -> float | None:
        ms = _pct_ms(xs, p)
        return None if ms is None else round(ms, 1)

    out: dict = {"feed_frames_per_s": feed_rate, "probe_requests": len(results)}
    for code in (202, 429):
        lat = [t for c, t, _ in results if c == code]
        out[str(code)] = {"n": len(lat), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                          "p99_ms": pct(lat, 99), "max_ms": pct(lat, 100)}
    return out


def probe(args: argparse.Namespace, frames: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        key = setup(data, args.cameras)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "REVISIT_DATA": str(data),
               "REVISIT_SERVICE_ACCEPT_PROCESS": str(not args.one_process).lower()}
        srv = start_server(env, port, timeout=60)
        try:
            idle = probe_phase(url, key, frames, args, 0.0)
            rate = args.feed_fps
            if not rate:
                warm = argparse.Namespace(**{**vars(args), "seconds": 15.0})
                rate = phase(url, key, frames, warm, 0.0, psutil.Process(srv.pid))[
                    "processed_frames_per_s"]
                time.sleep(5)  # let the saturation's backlog drain
            loaded = probe_phase(url, key, frames, args, rate)
        finally:
            _stop(srv)
    for name, r in (("idle", idle), (f"models flat out ({rate:.1f} frames/s fed)", loaded)):
        print(f"probe, {name}: " + "; ".join(
            f"{c} x{r[c]['n']} p50/p90/p99 {r[c]['p50_ms']}/{r[c]['p90_ms']}/{r[c]['p99_ms']} ms"
            for c in ("202", "429") if r[c]["n"]))
    out = {"idle": idle, "loaded": loaded, "clients": args.clients,
           "accept_process": not args.one_process,
           "client_nice": args.client_nice, "batch_frames": args.batch, "cpus": os.cpu_count(),
           "loadavg_1m": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    name = "ingest_probe_one_process.json" if args.one_process else "ingest_probe.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--frames", type=int, default=48, help="distinct frames to cycle through")
    ap.add_argument("--broker", choices=["redis"], default=None,
                    help="the accept path alone, publishing to this broker")
    ap.add_argument("--frame-kb", type=int, default=0, help="re-encode frames to ~this size")
    ap.add_argument("--client-nice", type=int, default=15,
                    help="CPU priority of the load clients: they stand in for cameras on other "
                    "machines, so they should take as little of the server's CPU as possible")
    ap.add_argument("--nice", type=int, default=None,
                    help="service.model_process_nice for the server (default: its default)")
    ap.add_argument("--probe", action="store_true",
                    help="answers at a camera's pace, idle and with the models flat out")
    ap.add_argument("--feed-fps", type=float, default=0.0,
                    help="--probe: frames/s the clients feed (0: what a saturation processes)")
    ap.add_argument("--one-process", action="store_true",
                    help="no accept process in front of the server "
                    "(service.accept_process off)")
    ap.add_argument("--in-process", action="store_true",
                    help="models in the server process (service.model_process off)")
    args = ap.parse_args()
    frames = [s.data for s in build_scenes(args.frames)]
    if args.frame_kb:
        frames = _sized(frames, args.frame_kb)
    if args.broker:
        broker(args, frames)
        return
    if args.probe:
        probe(args, frames)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        key = setup(data, args.cameras)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "REVISIT_DATA": str(data),
               "REVISIT_SERVICE_MODEL_PROCESS": "false" if args.in_process else "true",
               "REVISIT_SERVICE_ACCEPT_PROCESS": str(not args.one_process).lower()}
        if args.nice is not None:
            env["REVISIT_SERVICE_MODEL_PROCESS_NICE"] = str(args.nice)
        srv = start_server(env, port, timeout=60)
        try:
            server = psutil.Process(srv.pid)
            sat = phase(url, key, frames, args, 0.0, server)
            print(f"saturation: accepted {sat['accepted_frames_per_s']:.1f} frames/s, processed "
                  f"{sat['processed_frames_per_s']:.1f} frames/s, 429 share {sat['share_429']:.2f}, "
                  f"p50/p99 202 {sat['p50_ms_202']:.0f}/{sat['p99_ms_202']:.0f} ms, 429 "
                  f"{sat['p50_ms_429']:.0f}/{sat['p99_ms_429']:.0f} ms, RSS {sat['rss_mb_start']:.0f}"
                  f" -> max {sat['rss_mb_max']:.0f} MB", flush=True)
            rate = 2 * max(sat["processed_frames_per_s"], 1.0)
            over = phase(url, key, frames, args, rate, server)
            print(f"2x overload ({rate:.1f} frames/s offered): accepted "
                  f"{over['accepted_frames_per_s']:.1f} frames/s, processed "
                  f"{over['processed_frames_per_s']:.1f} frames/s, 429 share "
                  f"{over['share_429']:.2f}, p50/p99 202 {over['p50_ms_202']:.0f}/"
                  f"{over['p99_ms_202']:.0f} ms, 429 {over['p50_ms_429']:.0f}/"
                  f"{over['p99_ms_429']:.0f} ms, RSS {over['rss_mb_start']:.0f} -> max "
                  f"{over['rss_mb_max']:.0f} -> end {over['rss_mb_end']:.0f} MB")
        finally:
            _stop(srv)
    out = {"saturation": sat, "overload_2x": over, "clients": args.clients,
           "client_nice": args.client_nice, "model_process": not args.in_process,
           "model_process_nice": args.nice, "accept_process": not args.one_process,
           "batch_frames": args.batch, "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    name = ("ingest_in_process.json" if args.in_process
            else f"ingest_nice{args.nice}.json" if args.nice is not None
            else f"ingest_clients_nice{args.client_nice}.json" if args.client_nice != 15
            else "ingest_one_process.json" if args.one_process
            else "ingest.json")
    (RESULTS / name).write_text(json.dumps(out, indent=2))


def broker(args: argparse.Namespace, frames: list[bytes]) -> None:
    import redis

    queue_url = "redis://127.0.0.1:6379/9"
    redis.Redis.from_url(queue_url).flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        key = setup(data, args.cameras)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "REVISIT_DATA": str(data), "REVISIT_QUEUE_URL": queue_url}
        srv = start_server(env, port, timeout=60)
        try:
            server = psutil.Process(srv.pid)
            drained: mp.Queue = mp.Queue()
            drainer = mp.Process(target=drain, args=(queue_url, args.seconds + 5, drained))
            drainer.start()
            cpu0 = sum(server.cpu_times()[:2])
            sat = phase(url, key, frames, args, 0.0, server)
            cpu = sum(server.cpu_times()[:2]) - cpu0
            drainer.join()
            sat["drained_frames"] = drained.get()
        finally:
            _stop(srv)
    sat["server_cpu_s"] = cpu
    sat["server_cores_busy"] = cpu / sat["seconds"]
    sat["accepted_frames_per_core_s"] = (sat["accepted_frames_per_s"] * sat["seconds"] / cpu
                                         if cpu else None)
    print(f"broker redis, {sum(map(len, frames)) / len(frames) / 1024:.0f} KB frames: accepted "
          f"{sat['accepted_frames_per_s']:.1f} frames/s ({sat['accepted_frames_per_core_s']:.1f}"
          f" per server core, {sat['server_cores_busy']:.2f} cores busy), 429 share "
          f"{sat['share_429']:.2f}, p50/p99 202 {sat['p50_ms_202']:.0f}/{sat['p99_ms_202']:.0f}"
          f" ms, RSS {sat['rss_mb_start']:.0f} -> max {sat['rss_mb_max']:.0f} MB")
    out = {"broker": "redis", "phase": sat, "frame_bytes_mean": sum(map(len, frames)) / len(frames),
           "clients": args.clients, "batch_frames": args.batch, "cpus": os.cpu_count(),
           "loadavg_1m": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest_broker_redis.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
