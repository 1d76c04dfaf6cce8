"""Redis Streams backend: one stream per stage queue, one consumer group per stage.

- ``put`` appends with XADD, but only while the stream holds fewer than ``maxlen`` entries
  (checked and appended atomically in a Lua script). XADD's own ``MAXLEN`` would trim the
  oldest entries, i.e. silently drop batches nobody has processed yet; a depth check instead
  gives producers back-pressure (they wait, then get :class:`QueueFull`).
- ``get`` reads new entries with XREADGROUP. Entries delivered to a consumer that did not
  ack them within ``claim_idle_ms`` (it died, or hangs) are taken over with XAUTOCLAIM, so
  a dead worker's batches go to a live one. A consumer restarted under the same name first
  gets its own unacknowledged entries back.
- ``Delivery.ack()`` does XACK and XDEL in one transaction: an acked batch leaves the
  stream, so XLEN is exactly "pending + not yet delivered" (the depth metric) and memory
  stays bounded. Consequence: one consumer group per stream (no fan-out to several groups).
- A batch delivered more than ``max_deliveries`` times (it keeps killing its worker) or
  that does not decode is moved to ``revisit:<name>:dead`` and acked, so it cannot block
  the queue forever.
- Each consumer records when it last asked for work in ``revisit:<name>:alive:<group>``
  (a sorted set, expiring): ``status`` counts the live consumers from it, and a consumer
  idle past ``forget_idle_ms`` is forgotten only if it is not in it and holds nothing
  (XINFO's ``idle`` alone cannot tell a live idle consumer before Redis 7.2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from revisit.queue.base import (
    DEAD_LETTER_DAYS,
    Delivery,
    QueueFull,
    past_retention,
    tell_dead,
)
from revisit.queue.codec import CodecError, decode_batch, encode_batch
from revisit.records import Batch

log = logging.getLogger(__name__)

_FIELD = b"b"
# A consumer that asked for work within this long counts as live in ``status`` (a worker
# busy on one batch asks again when it is done; a killed one stops asking), and is never
# forgotten by ``_prune``. Asking is recorded by the consumer itself, in the sorted set
# ``revisit:<name>:alive:<group>`` (consumer -> Redis server time in ms): XINFO's ``idle``
# cannot tell, since before Redis 7.2 a read that returns nothing leaves it growing, and
# does not even list a consumer that never got an entry.
LIVE_IDLE_MS = 60_000
# KEYS[1] alive set; ARGV[1] consumer, ARGV[2] LIVE_IDLE_MS. Server time: no clock skew.
_BEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
"""
# KEYS[1] alive set; ARGV[1] LIVE_IDLE_MS: the consumers that asked for work within it.
_ALIVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""
# Forget a consumer only if, at this instant, it holds nothing and has not asked for work
# lately (checked and deleted atomically: DELCONSUMER drops the consumer's pending entries,
# which nobody could then claim). KEYS[1] stream, KEYS[2] alive set; ARGV[1] group,
# ARGV[2] consumer, ARGV[3] LIVE_IDLE_MS.
_FORGET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('ZSCORE', KEYS[2], ARGV[2])
if seen and tonumber(seen) >= now - tonumber(ARGV[3]) then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Atomic "append unless full": KEYS[1] stream, ARGV[1] bound, ARGV[2] payload.
_PUT_LUA = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'b', ARGV[2])
"""


def default_consumer_name() -> str:
    """Unique per process: a restarted worker is a new consumer; its old entries are claimed."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisStreamQueue:
    """A :class:`~revisit.queue.base.StageQueue` over one Redis stream ``revisit:<name>``."""

    def __init__(
        self,
        url: str,
        name: str,
        group: str = "revisit",
        consumer: str | None = None,
        maxlen: int = 8,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
        forget_idle_ms: int = 600_000,
        client: redis.Redis | None = None,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        if claim_idle_ms < 1:
            raise ValueError("claim_idle_ms must be >= 1")
        self.name = name
        self.key = f"revisit:{name}"
        self.dead_key = f"{self.key}:dead"
        self.alive_key = f"{self.key}:alive:{group}"
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.maxlen = maxlen
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.forget_idle_ms = forget_idle_ms
        self._next_prune = 0.0
        self._r = client or redis.Redis.from_url(url, socket_connect_timeout=5)
        self._put_script = self._r.register_script(_PUT_LUA)
        self._beat_script = self._r.register_script(_BEAT_LUA)
        self._alive_script = self._r.register_script(_ALIVE_LUA)
        self._forget_script = self._r.register_script(_FORGET_LUA)
        self._next_beat = 0.0
        # told of each batch moved to the dead letters (the worker's batch statuses)
        self.on_dead: Callable[[Batch, str], None] | None = None
        self._own_cursor: str | None = "0"  # replay own pending entries once, after a restart
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        try:
            self._r.xgroup_create(self.key, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- producer ---------------------------------------------------------------------------

    def put(self, batch: Batch, timeout: float | None = None) -> None:
        payload = encode_batch(batch)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            if self._put_script(keys=[self.key], args=[self.maxlen, payload]):
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise QueueFull(f"queue {self.name} is full ({self.maxlen} batches in {self.key})")
            wait = pause if deadline is None else min(pause, deadline - now)
            time.sleep(wait)
            pause = min(pause * 2, 0.1)

    # -- consumer ---------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Delivery | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._beat()
            delivery = self._own_pending() or self._claim()
            if delivery is not None:
                return delivery
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            # Block in slices so entries of dead consumers are claimed while we wait.
            slice_ms = min(1000, max(50, self.claim_idle_ms // 2))
            if deadline is not None:
                slice_ms = min(slice_ms, int((deadline - now) * 1000))
            resp = self._r.xreadgroup(
                self.group, self.consumer, {self.key: ">"}, count=1,
                block=slice_ms if slice_ms > 0 else None,
            )
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    delivery = self._deliver(entry_id, fields)
                    if delivery is not None:
                        return delivery
            if deadline is not None and slice_ms <= 0:
                return None

    def _beat(self) -> None:
        """Record that this consumer is asking for work (a few times per LIVE_IDLE_MS)."""
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._beat_script(keys=[self.alive_key], args=[self.consumer, LIVE_IDLE_MS])
        self._next_beat = now + LIVE_IDLE_MS / 6000

    def _alive(self) -> set[str]:
        """Consumers that asked for work within LIVE_IDLE_MS."""
        return {_as_str(n) for n in self._alive_script(keys=[self.alive_key],
                                                        args=[LIVE_IDLE_MS])}

    def _own_pending(self) -> Delivery | None:
        """After a restart under a fixed name: our own unacked entries, oldest first, once."""
        while self._own_cursor is not None:
            resp = self._r.xreadgroup(
                self.group, self.consumer, {self.key: self._own_cursor}, count=1
            )
            entries = resp[0][1] if resp else []
            if not entries:
                self._own_cursor = None
                return None
            entry_id, fields = entries[0]
            self._own_cursor = _as_str(entry_id)
            if self._too_many_deliveries(entry_id):  # a poison batch that kills its worker
                self._dead_letter(entry_id, fields, "delivered too many times")
                continue
            delivery = self._deliver(entry_id, fields)
            if delivery is not None:
                return delivery
        return None

    def _claim(self) -> Delivery | None:
        """Take over one entry idle longer than ``claim_idle_ms`` (its consumer is gone)."""
        now = time.monotonic()
        if now < self._next_claim:
            return None
        while True:
            nxt, entries, *_deleted = self._r.xautoclaim(
                self.key, self.group, self.consumer, self.claim_idle_ms,
                start_id=self._claim_cursor, count=1,
            )
            self._claim_cursor = _as_str(nxt)
            if not entries:
                if self._claim_cursor == "0-0":
                    # Scanned the whole pending list: nothing to claim for a while.
                    self._next_claim = now + min(0.25, self.claim_idle_ms / 4000)
                    self._prune(now)
                    return None
                continue
            entry_id, fields = entries[0]
            if self._too_many_deliveries(entry_id):
                self._dead_letter(entry_id, fields, "delivered too many times")
                continue
            log.info("claimed %s from %s (idle > %d ms)", _as_str(entry_id), self.key,
                     self.claim_idle_ms)
            delivery = self._deliver(entry_id, fields)
            if delivery is not None:
                return delivery

    def _prune(self, now: float) -> None:
        """Forget consumers idle longer than ``forget_idle_ms`` that hold nothing (workers
        that died or were renamed): they cost nothing but clutter ``XINFO`` and status."""
        if now < self._next_prune:
            return
        self._next_prune = now + self.forget_idle_ms / 4000
        for c in self._r.xinfo_consumers(self.key, self.group):
            name = _as_str(c["name"])
            # "idle" alone is no proof of death (before Redis 7.2 it grows while a live
            # consumer's reads find nothing): the script also asks the alive set, and
            # re-checks "nothing pending" at the moment it deletes
            if name != self.consumer and int(c["pending"]) == 0 \
                    and int(c["idle"]) > self.forget_idle_ms \
                    and self._forget_script(keys=[self.key, self.alive_key],
                                            args=[self.group, name, LIVE_IDLE_MS]):
                log.info("forgot consumer %s of %s (idle, nothing pending)", name, self.key)

    def _too_many_deliveries(self, entry_id: Any) -> bool:
        info = self._r.xpending_range(self.key, self.group, min=entry_id, max=entry_id, count=1)
        return bool(info) and int(info[0]["times_delivered"]) > self.max_deliveries

    def _deliver(self, entry_id: Any, fields: dict[bytes, bytes] | None) -> Delivery | None:
        if not fields or _FIELD not in fields:  # deleted under us (acked elsewhere) or foreign
            self._ack(entry_id)
            return None
        try:
            batch = decode_batch(fields[_FIELD])
        except CodecError as exc:
            self._dead_letter(entry_id, fields, f"undecodable: {exc}")
            return None
        return Delivery(batch, lambda: self._ack(entry_id))

    def _dead_letter(self, entry_id: Any, fields: dict[bytes, bytes] | None, why: str) -> None:
        log.error("moving %s of %s to %s: %s", _as_str(entry_id), self.key, self.dead_key, why)
        if fields:
            dead = {**fields, b"reason": why.encode(), b"id": _as_str(entry_id).encode()}
            self._r.xadd(self.dead_key, dead, maxlen=10_000, approximate=True)
            self._expire_dead()
        self._ack(entry_id)
        if self.on_dead is not None and fields and _FIELD in fields:
            with contextlib.suppress(CodecError):
                tell_dead(self.on_dead, decode_batch(fields[_FIELD]), why)

    def put_dead(self, payload: bytes, why: str) -> None:
        """A batch a stage set aside itself (a parked batch that cannot be applied)."""
        self._r.xadd(self.dead_key, {_FIELD: payload, b"reason": why.encode(),
                                     b"id": b"set aside"}, maxlen=10_000, approximate=True)
        self._expire_dead()

    def _expire_dead(self) -> None:
        """Dead letters older than ``DEAD_LETTER_DAYS`` go (an entry id is its time in ms)."""
        cutoff_ms = int((time.time() - DEAD_LETTER_DAYS * 86400) * 1000)
        self._r.xtrim(self.dead_key, minid=f"{cutoff_ms}-0", approximate=False)

    def _ack(self, entry_id: Any) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self.key, self.group, entry_id)
        pipe.xdel(self.key, entry_id)
        pipe.execute()

    # -- housekeeping -----------------------------------------------------------------------

    def replay_dead(self) -> int:
        """Move every dead letter back onto the stream (after the cause is fixed): each is
        appended anew, then deleted from the dead stream, so a crash in between delivers
        it twice at worst (stages are idempotent), never loses it."""
        moved = 0
        # only what is dead now: a batch that is still poison comes back here while this
        # runs (a live worker dead-letters it again) and must wait for the next replay
        newest = self._r.xrevrange(self.dead_key, count=1)
        if not newest:
            return 0
        last = newest[0][0]
        while entries := self._r.xrange(self.dead_key, max=last, count=100):
            for entry_id, fields in entries:
                if _FIELD in fields:
                    self._r.xadd(self.key, {_FIELD: fields[_FIELD]})
                    moved += 1
                self._r.xdel(self.dead_key, entry_id)
        return moved

    def forget_dead(self, retention: Callable[[str], datetime]) -> int:
        """Delete the dead letters older than ``DEAD_LETTER_DAYS`` and those past their
        tenant's retention (``retention``: tenant -> cutoff; queue.base.past_retention);
        one that does not decode waits for the fixed age. Returns the letters deleted
        for their tenant's retention."""
        self._expire_dead()
        gone, start = 0, "-"
        while entries := self._r.xrange(self.dead_key, min=start, count=100):
            for entry_id, fields in entries:
                try:
                    expired = _FIELD in fields and past_retention(decode_batch(fields[_FIELD]),
                                                                  retention)
                except CodecError:
                    expired = False
                if expired:
                    gone += int(self._r.xdel(self.dead_key, entry_id))
            start = "(" + _as_str(entries[-1][0])
        return gone

    def dead_letters(self) -> int:
        self._expire_dead()
        return int(self._r.xlen(self.dead_key))

    def status(self) -> dict[str, int]:
        """What ``revisit status`` shows for this stage's queue: waiting (not yet
        delivered), in flight (delivered, not acked), dead letters, live consumers."""
        total = int(self._r.xlen(self.key))
        try:
            in_flight = int(self._r.xpending(self.key, self.group)["pending"])
            # live: asked for work, or got some, within the last minute (a killed worker
            # stays in the group's list until forget_idle_ms, and must not look like staff)
            live = self._alive() | {
                _as_str(c["name"]) for c in self._r.xinfo_consumers(self.key, self.group)
                if int(c["idle"]) < LIVE_IDLE_MS}
            consumers = len(live)
        except redis.ResponseError:  # no group yet: nobody consumed
            in_flight, consumers = 0, 0
        return {"waiting": total - in_flight, "in_flight": in_flight,
                "dead_letters": self.dead_letters(), "consumers": consumers}

    def depth(self) -> int:
        """Entries not yet acked: pending (delivered, unacked) + not yet delivered."""
        return int(self._r.xlen(self.key))

    def close(self) -> None:
        """Leave the group if we hold nothing; our unacked entries stay claimable."""
        try:
            self._r.zrem(self.alive_key, self.consumer)  # a clean exit: not live any more
            for info in self._r.xinfo_consumers(self.key, self.group):
                if _as_str(info["name"]) == self.consumer and int(info["pending"]) == 0:
                    self._r.xgroup_delconsumer(self.key, self.group, self.consumer)
        except redis.RedisError as exc:
            log.warning("closing %s: %s", self.key, exc)
        finally:
            self._r.close()


def _as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
