"""Putting camera batches on the broker: the publisher side of the distributed mode."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable

from revisit.distributed.topology import QUEUE_BOUND, QUEUE_IN
from revisit.pipeline import Runtime, Summary, batched
from revisit.queue.base import QueueFull, StageQueue
from revisit.records import Batch, Frame, Rejected

log = logging.getLogger(__name__)


def publish(
    runtime: Runtime,
    items: Iterable[Frame | Rejected],
    *,
    stream: str | None = None,
    progress: bool = False,
    total: int | None = None,
    published: dict[str, list[str]] | None = None,
    before: dict[str, dict[str, int]] | None = None,
) -> Summary:
    """Put camera batches on the broker's frames queue, stamped ``<stream>#<seq>``.

    Frames already stored are skipped first (as in the embedded default), so re-running a
    publisher after a crash only sends what is missing. ``published`` collects the image
    ids sent per tenant and ``before`` each tenant's store counts before its first batch
    (for :func:`wait_stored`).
    """
    from tqdm import tqdm

    from revisit.queue.factory import open_queue

    settings = runtime.settings
    stream = stream or f"s-{uuid.uuid4().hex[:12]}"
    queue = open_queue(settings.queue_url, QUEUE_IN["detect"],
                       maxsize=max(QUEUE_BOUND, settings.pipeline.queue_size))
    summary = Summary()
    bar = tqdm(total=total, unit="frame", disable=not progress, leave=False)
    t0 = time.perf_counter()
    seq = 0
    recent: dict[tuple[str, str], None] = {}  # this run's image ids (Runtime.skip_known)
    try:
        for raw in batched(items, settings.pipeline.frame_batch):
            batch = _skip_known(runtime, raw, summary, recent)
            if not batch.frames and not batch.rejected:
                continue
            batch.batch_id = f"{stream}#{seq:09d}"
            seq += 1
            for f in batch.frames:
                if before is not None and f.tenant not in before:
                    before[f.tenant] = runtime.store.stats(f.tenant)
                if published is not None:
                    published.setdefault(f.tenant, []).append(f.image_id)
            put_blocking(queue, batch, threading.Event(), retry=True)
            summary.frames += len(batch.frames)
            summary.rejected.extend(batch.rejected)
            bar.update(len(batch.frames))
    finally:
        bar.close()
        queue.close()
        summary.seconds = time.perf_counter() - t0
    return summary


def _skip_known(runtime: Runtime, batch: Batch, summary: Summary,
                recent: dict[tuple[str, str], None]) -> Batch:
    """``Runtime.skip_known`` for one batch, riding out a database restart: the stream
    goes on with the same batches, so resolution order is unchanged."""
    while True:
        before = summary.skipped
        try:
            return next(iter(runtime.skip_known([batch], summary, recent)))
        except Exception as exc:
            if "Operational" not in type(exc).__name__:
                raise
            summary.skipped = before
            log.warning("publisher: store unavailable (%s); retrying", exc)
            time.sleep(1.0)


def put_blocking(queue: StageQueue, batch: Batch, stop: threading.Event, retry: bool = False) -> None:
    """Blocking put. ``retry``: ride out a broker restart (a put whose reply was lost may
    land twice; downstream idempotence absorbs it)."""
    while True:
        try:
            queue.put(batch, timeout=1.0)
            return
        except QueueFull:
            if stop.is_set():
                raise
        except Exception as exc:
            if not retry or stop.is_set():
                raise
            log.warning("publishing %s: %s: %s; retrying", batch.batch_id,
                        type(exc).__name__, exc)
            time.sleep(1.0)


def wait_stored(runtime: Runtime, published: dict[str, list[str]],
                before: dict[str, dict[str, int]], summary: Summary, progress: bool = False,
                quiet_warn_s: float = 60.0, poll_s: float = 1.0) -> None:
    """Wait until the workers stored every published frame, then fill ``summary`` with
    what the store gained (sightings, new visitors), as the embedded default reports it.
    Says so, once a minute, while nothing moves (are workers running?)."""
    from tqdm import tqdm

    store = runtime.store
    pending = {t: set(ids) for t, ids in published.items()}
    total = sum(len(ids) for ids in pending.values())
    bar = tqdm(total=total, unit="frame", desc="stored", disable=not progress, leave=False)
    last_move = time.monotonic()
    try:
        while any(pending.values()):
            moved = 0
            try:
                for tenant, ids in pending.items():
                    waiting = sorted(ids)
                    for i in range(0, len(waiting), 5000):
                        done = store.known_frames(tenant, waiting[i:i + 5000])
                        ids -= done
                        moved += len(done)
            except Exception as exc:  # a database restart: keep following
                if "Operational" not in type(exc).__name__:
                    raise
                log.warning("following the ingest: store unavailable (%s); retrying", exc)
            bar.update(moved)
            if moved:
                last_move = time.monotonic()
            elif time.monotonic() - last_move > quiet_warn_s:
                left = sum(len(v) for v in pending.values())
                log.warning("no frame stored in %.0f s (%d of %d waiting): are the workers "
                            "running (revisit worker --stage detect|embed|resolve|store)? "
                            "--no-wait only publishes", quiet_warn_s, left, total)
                last_move = time.monotonic()
            if any(pending.values()):
                time.sleep(poll_s)
    finally:
        bar.close()
    for tenant, was in before.items():
        now = store.stats(tenant)
        summary.sightings += now["sightings"] - was["sightings"]
        summary.new_visitors += max(0, now["visitors"] - was["visitors"])
    summary.faces = summary.sightings  # faces that became sightings (workers keep the rest)


def ingest_frames(runtime: Runtime, items: Iterable[Frame | Rejected], *,
                  progress: bool = False, total: int | None = None,
                  wait: bool = True) -> Summary:
    """What ``revisit ingest`` does: run the frames in this process (embedded default) or,
    with a broker configured (``queue_url``), publish them for ``revisit worker``s and
    (``wait``) follow them to the store."""
    if runtime.settings.queue_url:
        published: dict[str, list[str]] = {}
        before: dict[str, dict[str, int]] = {}
        t0 = time.perf_counter()
        # the ids are kept only to follow them to the store: a live stream published
        # without waiting must not grow a list for ever
        summary = publish(runtime, items, progress=progress, total=total,
                          published=published if wait else None, before=before)
        if wait:
            wait_stored(runtime, published, before, summary, progress=progress)
            summary.seconds = time.perf_counter() - t0
        return summary
    return runtime.ingest(items, progress=progress, total=total)
