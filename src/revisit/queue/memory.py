"""In-process bounded queue: the embedded default. Back-pressure comes from the bound."""

from __future__ import annotations

import queue

from revisit.queue.base import Delivery, QueueFull
from revisit.records import Batch


def _noop() -> None:
    return None


class MemoryQueue:
    """A bounded FIFO between two threads of one process.

    Nothing survives the process, so acks are no-ops: crash safety in the embedded default
    comes from the store (frames not committed are simply processed again on the next run).
    """

    def __init__(self, name: str, maxsize: int = 8) -> None:
        self.name = name
        self._q: queue.Queue[Batch] = queue.Queue(maxsize=maxsize)

    def put(self, batch: Batch, timeout: float | None = None) -> None:
        try:
            self._q.put(batch, timeout=timeout)
        except queue.Full:
            raise QueueFull(f"queue {self.name} is full ({self._q.maxsize} batches)") from None

    def get(self, timeout: float | None = None) -> Delivery | None:
        try:
            return Delivery(self._q.get(timeout=timeout), _noop)
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._q.qsize()

    def close(self) -> None:
        return None
