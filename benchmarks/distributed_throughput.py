"""End-to-end throughput of the distributed mode (Redis Streams + PostgreSQL) with 1 and 2
worker processes per stage, next to the embedded default on the same frames, and a check
that every configuration gives the same report.

    .venv/bin/python benchmarks/distributed_throughput.py --frames 1500

Frames: the chaos scenario (small real-face JPEGs, 0-1 face each). Each worker runs
inference on one thread, so "N workers per stage" is 4N single-threaded processes.
Writes benchmarks/results/distributed_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
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


def embedded(frames, work: Path) -> tuple[float, dict]:
    from revisit.config import load_settings
    from revisit.pipeline import Runtime

    rt = Runtime(load_settings(None, data=work / "embedded"))
    rt.vision.detector  # noqa: B018 - load models before the clock starts
    rt.vision.embedder  # noqa: B018
    t0 = time.perf_counter()
    rt.ingest(iter(frames))
    seconds = time.perf_counter() - t0
    snap = H.snapshot(rt.store, TENANTS)
    rt.close()
    return seconds, snap


def distributed(frames, work: Path, redis: H.Redis, pg: H.Postgres, per_stage: int,
                db: int) -> tuple[float, dict, dict]:
    from revisit.config import load_settings
    from revisit.distributed.publish import publish
    from revisit.pipeline import Runtime
    from revisit.store.postgres_store import PostgresStore

    qurl = f"redis://127.0.0.1:{redis.port}/{db}?claim_idle_ms=30000"
    surl = f"{pg.url}?schema=w{per_stage}"
    store = PostgresStore(surl)
    fleet = H.Fleet(H.worker_env(qurl, surl, work / f"w{per_stage}",
                                 source=H.frozen_source(work)),
                    dict.fromkeys(STAGES, per_stage), work / f"logs-{per_stage}")
    fleet.start()
    time.sleep(8)  # workers import and load models
    rt = Runtime(load_settings(None, data=work / f"pub{per_stage}", queue_url=qurl,
                               store_url=surl))
    t0 = time.perf_counter()
    pub = threading.Thread(target=lambda: publish(rt, iter(frames)), daemon=True)
    pub.start()
    H.wait_stored(store, len(frames), TENANTS, timeout=3600)
    seconds = time.perf_counter() - t0
    pub.join()
    time.sleep(1)
    fleet.stop()
    merges = H.consolidate_all(store, surl, TENANTS)
    snap = H.snapshot(store, TENANTS)
    store.close()
    rt.close()
    return seconds, snap, {"consolidation_merges": merges}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--face-ratio", type=float, default=0.2)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "distributed_throughput.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="revisit-tput-"))
    redis, pg = H.Redis(work / "redis"), H.Postgres(work / "pg")
    redis.start()
    pg.init()
    pg.start()
    runs = {}
    try:
        secs, ref = embedded(H.scenario(args.frames, face_ratio=args.face_ratio), work)
        runs["embedded (1 process, all cores)"] = {"seconds": round(secs, 1),
                                                   "frames_per_s": round(args.frames / secs, 1)}
        print("embedded", runs["embedded (1 process, all cores)"], flush=True)
        for per in (1, 2):
            secs, snap, extra = distributed(H.scenario(args.frames, face_ratio=args.face_ratio),
                                            work, redis, pg, per, per)
            d = H.diff(ref, snap)
            runs[f"redis+postgres, {per} worker(s) per stage"] = {
                "seconds": round(secs, 1), "frames_per_s": round(args.frames / secs, 1),
                "report_diff_vs_embedded": d or "none", **extra,
            }
            print(per, runs[f"redis+postgres, {per} worker(s) per stage"], flush=True)
    finally:
        redis.stop()
        pg.stop()
    faces = sum(len(ref[t]["sightings"]) for t in TENANTS)
    result = {
        "frames": args.frames, "sightings": faces,
        "machine": f"{os.cpu_count()} cores (shared with other jobs while measured)",
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
