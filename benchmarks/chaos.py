"""Chaos: kill -9 workers at random (>= 100 kills), restart the broker and the database
mid-run, and check that sightings and report equal an undisturbed run's.

    .venv/bin/python benchmarks/chaos.py                 # 10,000 frames, 2 workers/stage
    .venv/bin/python benchmarks/chaos.py --frames 2000 --min-kills 20   # quick look

Runs on a private Redis (append-only file, fsync always, so a broker restart loses no
acknowledged write) and a private PostgreSQL cluster (initdb in a temp dir) so restarting
them disturbs nobody. Frames are real: small JPEGs of LFW faces (0-1 face each) through
the real YuNet detector and SFace embedder (see distributed_harness.scenario). Not part
of the test run; writes benchmarks/results/chaos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import distributed_harness as H

TENANTS = ("default", "acme")
STAGES = ("detect", "embed", "resolve", "store")


def run(frames, redis: H.Redis, pg: H.Postgres, db: int, schema: str, per_stage: int,
        work: Path, chaos: dict | None = None) -> dict:
    from revisit.config import load_settings
    from revisit.distributed.publish import publish
    from revisit.pipeline import Runtime
    from revisit.store.postgres_store import PostgresStore

    qurl = f"redis://127.0.0.1:{redis.port}/{db}?claim_idle_ms=5000&max_deliveries=1000"
    surl = f"{pg.url}?schema={schema}"
    store = PostgresStore(surl)
    fleet = H.Fleet(H.worker_env(qurl, surl, work / schema, source=H.frozen_source(work)),
                    dict.fromkeys(STAGES, per_stage),
                    work / f"logs-{schema}")
    fleet.start()
    runtime = Runtime(load_settings(None, data=work / f"pub-{schema}", queue_url=qurl,
                                    store_url=surl))
    t0 = time.monotonic()
    publisher = threading.Thread(target=lambda: publish(runtime, iter(frames)), daemon=True)
    publisher.start()
    events: list[str] = []
    rng = random.Random(1)
    state = {"next_kill": time.monotonic() + 3, "kill_at": 0, "broker": False, "db": False}
    n = len(frames)

    def tick() -> None:
        if chaos is None:
            return
        now = time.monotonic()
        fleet.restart_dead()
        done = sum(store.stats(t)["frames"] for t in TENANTS)
        # kills spread over progress (every `every` frames stored, at most one per
        # `interval` s), so the run both finishes and collects its kills
        if now >= state["next_kill"] and done >= state["kill_at"]:
            events.append(f"{now - t0:7.1f}s kill -9 {fleet.kill_random(rng)} at {done}")
            state["next_kill"] = now + chaos["interval"]
            state["kill_at"] += chaos["every"]  # catch up after a jump (outage backlog)
        if not state["broker"] and done >= n * 0.3:
            state["broker"] = True
            redis.stop(hard=True)
            events.append(f"{time.monotonic() - t0:7.1f}s redis kill -9 at {done} frames")
            time.sleep(2)
            redis.start()
            events.append(f"{time.monotonic() - t0:7.1f}s redis restarted")
        if not state["db"] and done >= n * 0.6:
            state["db"] = True
            pg.stop("immediate")
            events.append(f"{time.monotonic() - t0:7.1f}s postgres stop -m immediate at "
                          f"{done} frames")
            time.sleep(2)
            pg.start()
            events.append(f"{time.monotonic() - t0:7.1f}s postgres restarted")

    def polled() -> None:
        try:
            tick()
        except Exception as exc:  # the database we poll through is the one we restart
            events.append(f"poll: {type(exc).__name__}")

    def stats_retry():
        for _ in range(60):
            try:
                return H.wait_stored(store, n, TENANTS, timeout=3600, tick=polled)
            except TimeoutError:
                raise
            except Exception:
                time.sleep(1)
        raise RuntimeError("store unreachable")

    stats_retry()
    seconds = time.monotonic() - t0
    publisher.join(timeout=60)
    # let the store stage drain, then check nothing is left behind
    time.sleep(3)
    fleet.stop()
    snap = H.snapshot(store, TENANTS)
    parked = store._query("SELECT count(*) FROM resolve_parked")[0][0]
    dupes = store._query(
        "SELECT count(*) FROM (SELECT tenant, face_image_id FROM sightings "
        "GROUP BY 1, 2 HAVING count(*) > 1) d")[0][0]
    store.close()
    runtime.close()
    return {"seconds": round(seconds, 1), "frames_per_s": round(n / seconds, 1),
            "kills": fleet.kills, "restarts": fleet.restarts, "events": events,
            "parked_left": int(parked), "duplicate_sightings": int(dupes), "snapshot": snap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--per-stage", type=int, default=2)
    ap.add_argument("--min-kills", type=int, default=100)
    ap.add_argument("--face-ratio", type=float, default=0.3)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "chaos.json")
    args = ap.parse_args()

    frames = H.scenario(args.frames, face_ratio=args.face_ratio)
    work = Path(tempfile.mkdtemp(prefix="revisit-chaos-"))
    redis, pg = H.Redis(work / "redis"), H.Postgres(work / "pg")
    redis.start()
    pg.init()
    pg.start()
    try:
        print(f"undisturbed run: {args.frames} frames, {args.per_stage} workers per stage ...",
              flush=True)
        calm = run(frames, redis, pg, 0, "undisturbed", args.per_stage, work)
        print(f"  {calm['seconds']} s ({calm['frames_per_s']} frames/s)", flush=True)
        interval = max(0.5, calm["seconds"] / (args.min_kills * 1.25))
        every = max(1, int(args.frames / (args.min_kills * 1.6)))
        print(f"chaos run: kill -9 a random worker every {every} frames stored (at most one "
              f"per {interval:.2f} s), restart it; "
              "redis kill -9 at 30%, postgres immediate stop at 60% ...", flush=True)
        wild = run(frames, redis, pg, 1, "chaos", args.per_stage, work,
                   chaos={"interval": interval, "every": every})
    finally:
        redis.stop()
        pg.stop()
    d = H.diff(calm["snapshot"], wild["snapshot"])
    sightings = {t: len(calm["snapshot"][t]["sightings"]) for t in TENANTS}
    sightings_after = {t: len(wild["snapshot"][t]["sightings"]) for t in TENANTS}
    ok = (not d and wild["kills"] >= args.min_kills and not wild["parked_left"]
          and not wild["duplicate_sightings"])
    result = {
        "frames": args.frames, "workers_per_stage": args.per_stage,
        "undisturbed_seconds": calm["seconds"], "chaos_seconds": wild["seconds"],
        "kills": wild["kills"], "restarts": wild["restarts"],
        "broker_restarts": 1, "database_restarts": 1,
        "sightings_undisturbed": sightings, "sightings_chaos": sightings_after,
        "frames_stored": {t: wild["snapshot"][t]["frames"] for t in TENANTS},
        "report_header_undisturbed": {t: calm["snapshot"][t]["header"] for t in TENANTS},
        "report_header_chaos": {t: wild["snapshot"][t]["header"] for t in TENANTS},
        "duplicate_sightings": wild["duplicate_sightings"], "parked_left": wild["parked_left"],
        "report_diff": d or "none", "passed": ok,
        "events_first_last": [*wild["events"][:5], "...", *wild["events"][-5:]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        if k != "events_first_last":
            print(f"{k}: {v}")
    print("\n".join(wild["events"][:3] + ["..."] + [e for e in wild["events"] if "redis" in e
          or "postgres" in e] + ["..."] + wild["events"][-3:]))
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
