"""The service's detector and embedder in a process of their own.

In one process, model work (decoding, pre- and post-processing in Python, the models'
own threads) competes with the HTTP handlers for the interpreter and the cores, and even
a 429 waited behind it. Here the two model stages run in a child process at a lower CPU
priority (``nice``): the handlers, the resolver and the store stay in the server process
and preempt the models whenever they have work, while the models still take every idle
cycle. Batches cross a pipe per stage (pickled; frames are a camera's encoded snapshots,
faces their aligned crops), so detect and embed still overlap.

The cameras' zones (people counting, exclusion) live in the store the server owns; a
detect call carries the server's cached copy whenever it was reloaded. If the child
dies, a new one starts and the batch in flight is sent again; if that one dies on it
too, the batch is marked failed (kept in the spool's failed folder for ``revisit admin
replay``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from revisit.config import Settings
from revisit.records import Batch

log = logging.getLogger(__name__)


class ModelProcessError(RuntimeError):
    """The model process failed a batch or stopped."""


def _serve(conn: Connection, fn: Any, zones: list[Any]) -> None:
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        batch, snapshot = msg
        if snapshot is not None:
            zones[0] = snapshot
        try:
            out = ("ok", fn(batch))
        except Exception as exc:  # reported to the server, which marks the batch failed
            log.exception("model process: batch %s failed", batch.batch_id)
            out = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(out)


def _child(settings: Settings, detect: Connection, embed: Connection, nice: int) -> None:
    """The child's main: one thread per stage over one set of models."""
    from revisit.occupancy.counting import ZoneBook
    from revisit.pipeline import LocalModels

    if nice:
        with contextlib.suppress(OSError):  # not permitted here: run at the same priority
            os.nice(nice)
    zones: list[Any] = [{}]
    models = LocalModels(settings, zones=ZoneBook(lambda: zones[0], ttl_s=0.0))
    worker = threading.Thread(target=_serve, args=(embed, models.embed, zones), daemon=True)
    worker.start()
    _serve(detect, models.detect, zones)
    models.close()


class ModelProcess:
    """detect and embed (the :class:`revisit.pipeline.Models` protocol) in a child."""

    def __init__(self, settings: Settings, zones: Any = None, nice: int = 10) -> None:
        self.settings = settings
        self.zones = zones
        self.nice = nice
        self._locks = {"detect": threading.Lock(), "embed": threading.Lock()}
        self._start_lock = threading.Lock()
        self._proc: Any = None
        self._conns: dict[str, Connection] = {}
        self._zones_sent: Any = None  # the zones the child holds (sent again when they change)
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no copy of the server's threads, locks or store
        ours_d, theirs_d = ctx.Pipe()
        ours_e, theirs_e = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(self.settings, theirs_d, theirs_e, self.nice),
                                 name="revisit-models", daemon=True)
        self._proc.start()
        theirs_d.close()
        theirs_e.close()
        self._conns = {"detect": ours_d, "embed": ours_e}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _restart(self, dead: Any) -> None:
        with self._start_lock:
            if self._proc is not dead:  # the other stage restarted it already
                return
            log.error("model process %s stopped (exit code %s); starting another",
                      dead.pid, dead.exitcode)
            for c in self._conns.values():
                c.close()
            self._start()
            self._zones_sent = None
            self.restarts += 1

    def _call(self, stage: str, batch: Batch) -> Batch:
        zones = self.zones.all() if stage == "detect" and self.zones is not None else None
        with self._locks[stage]:
            for attempt in (1, 2):  # a child that died is replaced and the batch sent again
                proc, conn = self._proc, self._conns[stage]
                # the zone book returns one dict until it reloads: send it only when new
                snapshot = zones if zones is not self._zones_sent else None
                try:
                    conn.send((batch, snapshot))
                    if snapshot is not None:
                        self._zones_sent = snapshot
                    status, out = conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    proc.join(timeout=1)
                    self._restart(proc)
                    if attempt == 2:  # twice: the batch itself may be what kills it
                        raise ModelProcessError(
                            f"the model process stopped twice during {stage}") from exc
        if status != "ok":
            raise ModelProcessError(f"{stage} in the model process: {out}")
        return out

    def detect(self, batch: Batch) -> Batch:
        return self._call("detect", batch)

    def embed(self, batch: Batch) -> Batch:
        return self._call("embed", batch)

    def close(self) -> None:
        if self._proc is None:
            return
        for conn in self._conns.values():
            with contextlib.suppress(OSError):
                conn.send(None)
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        for conn in self._conns.values():
            conn.close()
        self._proc = None
