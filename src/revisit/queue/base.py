"""The queue contract between stages. In-process (default), Redis Streams and Kafka
backends implement it and pass ``tests/queue/test_contract.py``.

Delivery is at-least-once: a consumer acks a batch only after the next stage has it (or the
store has committed it). A batch that is not acked is delivered again, to this or another
consumer, so every stage must be idempotent (see :mod:`revisit.store.base`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from revisit.records import Batch

log = logging.getLogger(__name__)

# Dead letters hold snapshots and faces: kept as long as a failed spooled batch
# (service.batch_status_days' default), then dropped whether replayed or not; sooner when
# past their tenant's retention (past_retention).
DEAD_LETTER_DAYS = 30


def past_retention(batch: Batch, retention: Callable[[str], datetime]) -> bool:
    """A batch held outside the store (a failed spooled batch, a dead letter) must go:
    every frame of some tenant in it is older than that tenant's cutoff (``retention``:
    tenant -> cutoff). A batch holding several tenants goes with the first of them to
    expire, since its snapshots cannot be dropped apart; one with no frame never does."""
    newest: dict[str, datetime] = {}
    for f in batch.frames:
        ts = f.ts.astimezone(UTC)
        newest[f.tenant] = max(ts, newest.get(f.tenant, ts))
    return any(ts < retention(tenant) for tenant, ts in newest.items())


@dataclass(slots=True)
class Delivery:
    batch: Batch
    ack: Callable[[], None]


def tell_dead(on_dead: Callable[[Batch, str], None], batch: Batch, why: str) -> None:
    """Tell a queue's ``on_dead`` that ``batch`` went to the dead letters: nobody delivers
    it again, so whoever shows its status must hear it. Its failure is only logged (the
    letter is kept either way)."""
    try:
        on_dead(batch, why)
    except Exception:
        log.exception("dead letter %s: telling its owner failed", batch.batch_id)


class QueueFull(Exception):
    """The queue is at capacity and the caller asked not to wait (HTTP answers 429)."""


class BrokerUnavailable(RuntimeError):
    """The broker did not confirm a write in time: not a full queue (HTTP answers 503);
    the batch may still arrive, and a retry is a duplicate at worst."""


@runtime_checkable
class StageQueue(Protocol):
    name: str

    def put(self, batch: Batch, timeout: float | None = None) -> None:
        """Enqueue; blocks while full up to ``timeout`` (None = forever), then QueueFull."""
        ...

    def get(self, timeout: float | None = None) -> Delivery | None:
        """Next batch, or None after ``timeout`` seconds without one."""
        ...

    def depth(self) -> int:
        """Batches waiting (approximate for brokers): exported as a metric."""
        ...

    def close(self) -> None: ...
