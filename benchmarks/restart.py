"""How long a batch waits when the worker holding it is killed (kill -9), on Redis Streams.

Two cases, each ``--runs`` times, on a private Redis and a private PostgreSQL:

- **restart**: one embed worker named ``embed-a``; killed while it holds a batch and
  started again under the same name (what a Procfile runner or an orchestrator does). The
  restarted consumer replays its own unacked entries first.
- **no restart**: two embed workers; the one holding the batch is killed and not restarted;
  the other takes the batch over once it has been idle ``claim_idle_ms``.

Measured: seconds from the kill to the killed batch being delivered to a live consumer
again (read from the stream's pending list), and from the kill to all its frames stored;
next to the time the same batch takes undisturbed.

    python benchmarks/restart.py [--runs 3] [--claim-idle-ms 10000]

Writes ``benchmarks/results/restart.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import distributed_harness as H

RESULTS = Path(__file__).resolve().parent / "results"
REVISIT = str(Path(sys.executable).with_name("revisit"))


def _spawn(env: dict[str, str], stage: str, name: str, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([REVISIT, "worker", "--stage", stage, "--name", name],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=H.REPO)


def _holder(r: Any, key: str) -> tuple[str, str] | None:
    """(entry id, consumer) of the one pending entry of the embed stream, if any."""
    rows = r.xpending_range(key, "revisit", min="-", max="+", count=10)
    if not rows:
        return None
    return rows[0]["message_id"].decode(), rows[0]["consumer"].decode()


def _publish(settings: Any, frames: list[Any]) -> None:
    from revisit.distributed.publish import ingest_frames
    from revisit.pipeline import Runtime

    rt = Runtime(settings)
    try:
        ingest_frames(rt, iter(frames), wait=False)
    finally:
        rt.close()


def _stored(store: Any, frames: list[Any]) -> bool:
    return len(store.known_frames("acme", [f.image_id for f in frames])) == len(frames)


def one_run(env: dict[str, str], settings: Any, store: Any, logs: Path, restart: bool,
            seed: int) -> dict[str, float]:
    import redis

    r = redis.Redis.from_url(settings.queue_url.split("?")[0])
    key = "revisit:faces"  # the embed stage's input
    embed = {"embed-a": _spawn(env, "embed", "embed-a", logs)}
    if not restart:
        embed["embed-b"] = _spawn(env, "embed", "embed-b", logs)
    try:
        time.sleep(8)  # models loaded
        frames = H.scenario(64, people=8, face_ratio=1.0, tenants=("acme",), seed=seed)
        for f in frames:
            f.image_id = f"restart-{seed}-{f.image_id}"
        t_pub = time.monotonic()
        _publish(settings, frames)
        held = None
        while held is None and time.monotonic() - t_pub < 120:
            held = _holder(r, key)
            time.sleep(0.005)
        if held is None:
            raise RuntimeError("the embed stage never took the batch")
        entry, consumer = held
        victim = consumer.rsplit("-", 1)[0]  # a worker's consumers are <name>-<thread>
        embed[victim].kill()
        embed[victim].wait()
        t_kill = time.monotonic()
        if restart:
            embed[victim] = _spawn(env, "embed", victim, logs)
        redelivered = None
        while time.monotonic() - t_kill < 600:
            if redelivered is None:
                row = r.xpending_range(key, "revisit", min=entry, max=entry, count=1)
                # acked already, taken over by another consumer, or delivered again to the
                # restarted one: a live consumer has it
                if not row or row[0]["consumer"].decode() != consumer or \
                        row[0]["times_delivered"] > 1:
                    redelivered = time.monotonic() - t_kill
            if _stored(store, frames):
                break
            time.sleep(0.02)
        stored = time.monotonic() - t_kill
        return {"redelivered_s": round(redelivered or stored, 2), "stored_s": round(stored, 2)}
    finally:  # no worker outlives the run, whatever happened
        for p in embed.values():
            p.kill()
        for p in embed.values():
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--claim-idle-ms", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "restart.json")
    args = ap.parse_args()
    from revisit.config import load_settings
    from revisit.store.postgres_store import PostgresStore

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis_srv = H.Redis(work / "redis")
        pg = H.Postgres(work / "pg")
        redis_srv.start()
        pg.init()
        pg.start()
        queue_url = f"{redis_srv.url}?claim_idle_ms={args.claim_idle_ms}"
        env = H.worker_env(queue_url, pg.url, work / "data")
        settings = load_settings(None, data=work / "data", queue_url=queue_url,
                                 store_url=pg.url)
        store = PostgresStore(pg.url)
        logs = work / "logs"
        logs.mkdir()
        others = [_spawn(env, s, f"{s}-a", logs) for s in ("detect", "resolve", "store")]
        out: dict[str, Any] = {"claim_idle_ms": args.claim_idle_ms, "runs": args.runs}
        try:
            # undisturbed: the same kind of batch with one embed worker, nobody killed
            embed = _spawn(env, "embed", "embed-u", logs)
            time.sleep(8)
            base = []
            for i in range(args.runs):
                frames = H.scenario(64, people=8, face_ratio=1.0, tenants=("acme",),
                                    seed=100 + i)
                for f in frames:
                    f.image_id = f"base-{i}-{f.image_id}"
                t0 = time.monotonic()
                _publish(settings, frames)
                while not _stored(store, frames):
                    time.sleep(0.02)
                base.append(round(time.monotonic() - t0, 2))
            embed.terminate()
            embed.wait(timeout=30)
            out["undisturbed_s"] = base
            for restart in (True, False):
                runs = [one_run(env, settings, store, logs, restart,
                                seed=(200 if restart else 300) + i)  # frames not yet stored
                        for i in range(args.runs)]
                label = "restart" if restart else "no_restart"
                out[label] = runs
                out[f"{label}_median"] = {
                    k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"{label}: {runs}")
            print(f"undisturbed: {base}")
        finally:
            for p in others:
                p.terminate()
            for p in others:
                p.wait(timeout=30)
            store.close()
            pg.stop()
            redis_srv.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
