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
) -> Summary:
    """Put camera batches on the broker's frames queue, stamped ``<stream>#<seq>``.

    Frames already stored are skipped first (as in the embedded default), so re-running a
    publisher after a crash only sends what is missing.
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
    try:
        for raw in batched(items, settings.pipeline.frame_batch):
            batch = _skip_known(runtime, raw, summary)
            if not batch.frames and not batch.rejected:
                continue
            batch.batch_id = f"{stream}#{seq:09d}"
            seq += 1
            put_blocking(queue, batch, threading.Event(), retry=True)
            summary.frames += len(batch.frames)
            summary.rejected.extend(batch.rejected)
            bar.update(len(batch.frames))
    finally:
        bar.close()
        queue.close()
        summary.seconds = time.perf_counter() - t0
    return summary


def _skip_known(runtime: Runtime, batch: Batch, summary: Summary) -> Batch:
    """``Runtime.skip_known`` for one batch, riding out a database restart: the stream
    goes on with the same batches, so resolution order is unchanged."""
    while True:
        before = summary.skipped
        try:
            return next(iter(runtime.skip_known([batch], summary)))
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


def ingest_frames(runtime: Runtime, items: Iterable[Frame | Rejected], *,
                  progress: bool = False, total: int | None = None) -> Summary:
    """What ``revisit ingest`` does: run the frames in this process (embedded default) or,
    with a broker configured (``queue_url``), publish them for ``revisit worker``s."""
    if runtime.settings.queue_url:
        return publish(runtime, items, progress=progress, total=total)
    return runtime.ingest(items, progress=progress, total=total)
