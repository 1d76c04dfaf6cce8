"""Reports run in a pool of their own, each under a time budget.

A report or summary can scan millions of rows. Running them on FastAPI's shared thread
pool would let a few heavy requests starve everything else (health checks, batch uploads,
admin). Here they get ``report_workers`` threads and at most ``report_waiting`` more
requests waiting; past that the API answers 429. Each job's reads share one time budget
(:func:`revisit.store.base.time_budget`): past it the query is stopped and the API answers
503, so a runaway report frees its worker instead of holding it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from revisit.store.base import time_budget

T = TypeVar("T")


class PoolBusy(RuntimeError):
    """Every report worker is busy and the waiting line is full."""


class ReportPool:
    def __init__(self, workers: int, waiting: int, budget_s: float) -> None:
        self.budget_s = budget_s
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="report")
        self._slots = threading.BoundedSemaphore(workers + waiting)

    def _claim(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise PoolBusy("every report worker is busy")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a report worker, under the budget."""
        self._claim()

        def job() -> T:
            try:
                with time_budget(self.budget_s):
                    return fn(*args)
            finally:
                self._slots.release()

        return await asyncio.wrap_future(self._pool.submit(job))

    def start(self, fn: Callable[[], None]) -> None:
        """``fn()`` on a report worker without waiting for it (a streamed answer's
        producer); it holds its slot until it returns."""
        self._claim()

        def job() -> None:
            try:
                with time_budget(self.budget_s):
                    fn()
            finally:
                self._slots.release()

        self._pool.submit(job)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
