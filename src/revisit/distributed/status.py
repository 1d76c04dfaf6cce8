"""Where the work of a distributed deployment is: per stage queue the batches waiting, in
flight and dead-lettered, the live consumers; frames stored per tenant; streams with
parked batches; batches resolve skipped. Read by ``revisit status``, the service's
``GET /v1/pipeline`` and its metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from revisit.config import Settings
from revisit.distributed.topology import QUEUE_IN
from revisit.queue.base import StageQueue


class PipelineStatus:
    """Opens each stage's queue once (for repeated reads: a scraper, a poll loop)."""

    def __init__(self, settings: Settings, store: Any) -> None:
        if not settings.queue_url:
            raise ValueError("no broker configured (queue_url)")
        self.settings = settings
        self.store = store
        self._queues: dict[str, StageQueue] = {}

    def _queue(self, stage: str) -> StageQueue:
        if stage not in self._queues:
            from revisit.queue.factory import open_queue

            self._queues[stage] = open_queue(self.settings.queue_url, QUEUE_IN[stage])
        return self._queues[stage]

    def stages(self) -> dict[str, dict[str, int]]:
        out = {}
        for stage in QUEUE_IN:
            q = self._queue(stage)
            status = getattr(q, "status", None)
            out[stage] = status() if status is not None else {"waiting": q.depth()}
        return out

    def forget_dead(self, retention: Callable[[str], datetime]) -> int:
        """Trim every stage queue's dead letters: past the fixed age, and past their
        tenant's retention where the broker can delete one letter (Redis; a Kafka
        dead topic only keeps its fixed ``retention.ms``). Returns the letters deleted
        for their tenant's retention."""
        gone = 0
        for stage in QUEUE_IN:
            q = self._queue(stage)
            forget = getattr(q, "forget_dead", None)
            if forget is not None:
                gone += forget(retention)
        return gone

    def read(self) -> dict[str, Any]:
        return {
            "stages": self.stages(),
            "stored_frames": {t: self.store.stats(t)["frames"] for t in self.store.tenants()},
            "parked_streams": self.store.parked_streams(),
            "skipped_batches": self.store.count_skipped_batches(pending_only=True),
        }

    def close(self) -> None:
        for q in self._queues.values():
            with contextlib.suppress(Exception):
                q.close()
        self._queues.clear()
