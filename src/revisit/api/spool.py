"""Accepted batches kept on disk until they are stored, so that an embedded server (no
broker) that crashes or restarts loses nothing it answered 202 for.

:meth:`Spool.put` makes the batch durable in the spool's journal (``spool/journal/``,
:mod:`revisit.api.journal`: one fdatasync of blocks already on disk) and then writes it
(frames with their encoded images, in the queue codec) to ``<data>/spool/<batch id>.batch``
through a temporary file and an atomic rename (a batch larger than a journal segment:
fsynced there instead), before the batch is queued; :meth:`Spool.remove` deletes it once the batch is stored;
:meth:`Spool.set_aside` moves a failed batch to ``spool/failed/`` (kept, not run again at
start: ``revisit admin replay`` queues it again once the cause is fixed);
:meth:`Spool.pending` returns what an earlier process left, oldest first, for the
processor to run again at start. Running a batch twice is harmless: the store skips frames
it already holds (at-least-once delivery, idempotent writes). With a broker the broker
holds accepted batches instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from revisit.api import journal
from revisit.ingest.durable import fsync_path, make_dir, write_synced
from revisit.ingest.status import BatchStatus
from revisit.queue.base import past_retention
from revisit.queue.codec import decode_batch, encode_batch
from revisit.records import Batch

log = logging.getLogger(__name__)


def status_meta(st: BatchStatus) -> dict[str, Any]:
    """A batch's status as the spool keeps it beside the batch: what a restart, or the
    server taking a batch the accept process spooled, needs to go on answering for it."""
    return {"tenant": st.tenant, "key_id": st.key_id, "frames": st.frames,
            "duplicates": st.duplicates, "rejected": st.rejected,
            "received_at": st.received_at.isoformat()}


def meta_status(batch_id: str, meta: dict[str, Any], tenant: str = "",
                frames: int = 0) -> BatchStatus:
    """The status :func:`status_meta` kept (``tenant``, ``frames``: where it has none)."""
    st = BatchStatus(batch_id, str(meta.get("tenant", tenant)), str(meta.get("state", "queued")),
                     int(meta.get("frames", frames)), duplicates=int(meta.get("duplicates", 0)),
                     rejected=list(meta.get("rejected", [])), key_id=str(meta.get("key_id", "")))
    if "received_at" in meta:
        st.received_at = datetime.fromisoformat(meta["received_at"])
    if st.state == "done":
        st.finished_at = st.received_at
    return st


class Bell:
    """A named pipe beside the spool (``.bell``): a process that spools a batch rings it,
    and the server's loop that takes batches from the spool sleeps until it rings (or a
    timeout: the pipe is a shortcut, the spool stays the truth). Waking on a put instead
    of looking every few milliseconds takes no CPU while nothing comes and no wait when
    something does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read: int | None = None
        self._write: int | None = None
        self._closed = False
        self._lock = threading.Lock()

    def listen(self) -> bool:
        """Make the pipe and open it to wait on (False: this filesystem has no named
        pipes; the caller looks now and then instead)."""
        self._closed = False
        try:
            try:
                os.mkfifo(self.path, 0o600)
            except FileExistsError:
                if not stat.S_ISFIFO(os.lstat(self.path).st_mode):
                    self.path.unlink()
                    os.mkfifo(self.path, 0o600)
            self._read = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("spool bell: %s; looking for spooled batches every 20 ms", exc)
            return False
        self.ring()  # this process's own writer: a reader never sees the pipe's end
        return True

    def ring(self) -> None:
        """Wake the listener, if one listens (never blocks, never fails)."""
        with self._lock:
            if self._closed:
                return
            if self._write is None:
                try:
                    self._write = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # no listener (ENXIO), or no pipe yet
                    return
            try:
                os.write(self._write, b"\0")
            except BlockingIOError:  # the pipe is full: the listener has rings to read
                pass
            except OSError:  # the listener's pipe is gone: open it again next time
                os.close(self._write)
                self._write = None

    def wait(self, timeout: float) -> None:
        """Until a ring or ``timeout`` seconds; the rings so far are read."""
        fd = self._read
        if fd is None:  # not listening
            time.sleep(timeout)
            return
        try:
            # a pipe with no writer left (not even this one's) reads empty at once
            if select.select([fd], [], [], timeout)[0] and not os.read(fd, 65536):
                time.sleep(timeout)
        except (OSError, ValueError):  # closed meanwhile (a stop)
            time.sleep(timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in (self._read, self._write):
                if fd is not None:
                    os.close(fd)
            self._read = self._write = None


class Spool:
    def __init__(self, root: Path, clean: bool = False) -> None:
        """``clean``: delete what a writer stopped before finishing (never acknowledged):
        only the server process, at its start, before anything else writes here (not the
        accept process, not a CLI command while the server runs)."""
        self.root = root
        make_dir(root)
        self._journal: journal.Journal | None = None
        self._journal_lock = threading.Lock()
        self.bell = Bell(root / ".bell")
        if clean:
            journal.recover(self.journal_dir, self._restore, self._durable)
        for tmp in root.glob("*.tmp") if clean else ():
            tmp.unlink(missing_ok=True)
        for meta in root.glob("*.json") if clean else ():  # its batch never written
            if not self._live(meta.stem):
                meta.unlink(missing_ok=True)

    def _path(self, batch_id: str) -> Path:
        return self.root / f"{batch_id}.batch"

    def _meta_path(self, batch_id: str) -> Path:
        return self.root / f"{batch_id}.json"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @staticmethod
    def _write(path: Path, data: bytes, synced: bool = True) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            if synced:
                write_synced(tmp, data)
            else:  # the journal holds it durably
                tmp.write_bytes(data)
            tmp.replace(path)
        except BaseException:  # a full disk: no half-written file left for the next start
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def _writer(self) -> journal.Journal:
        with self._journal_lock:  # uploads on several threads: one journal
            if self._journal is None:
                self._journal = journal.Journal(self.journal_dir, settled=self._settled)
            return self._journal

    def prepare(self) -> None:
        """Start this process's journal before its first batch (a process that writes:
        its keeper makes a segment ready, which the first upload would otherwise make)."""
        self._writer().start()

    def _journaled(self, batch_id: str, meta: dict[str, Any], data: bytes) -> bool:
        """Append to this process's journal; then write the files without fsync (False:
        too large for the journal, nothing written)."""
        jr = self._writer()
        raw = json.dumps(meta).encode()
        loc = jr.append(batch_id, raw, data)
        if loc is None:
            return False
        try:
            self._write(self._meta_path(batch_id),
                        json.dumps({**meta, "journal": loc}).encode(), synced=False)
            if data:
                self._write(self._path(batch_id), data, synced=False)
        except BaseException:
            # not accepted (the caller answers an error and removes what was written, but
            # finds no location without the status file): not restored at the next start
            with contextlib.suppress(OSError):
                journal.mark_done(loc[0], loc[1], self.journal_dir)
            raise
        return True

    def put(self, batch: Batch, meta: dict[str, Any] | None = None) -> None:
        """``meta``: what the batch's status needs after a restart (who posted it, what
        was refused at the door), written first, beside the batch."""
        data = encode_batch(batch)
        if meta is None or not self._journaled(batch.batch_id, meta, data):
            if meta is not None:
                self._write(self._meta_path(batch.batch_id), json.dumps(meta).encode())
            self._write(self._path(batch.batch_id), data)
            fsync_path(self.root)  # the renames too: a power cut must not take back a 202
        self.bell.ring()

    def put_done(self, batch_id: str, meta: dict[str, Any]) -> None:
        """A batch with nothing to process (all its snapshots already spooled): only its
        status, ``meta`` with state "done", for the server to record (:meth:`settled`)."""
        meta = {**meta, "state": "done"}
        if not self._journaled(batch_id, meta, b""):
            self._write(self._meta_path(batch_id), json.dumps(meta).encode())
            fsync_path(self.root)
        self.bell.ring()

    def _settled(self, rec: journal.Record) -> bool:
        """A journal record whose batch and status are gone from the spool."""
        return not (self._path(rec.batch_id).exists()
                    or self._meta_path(rec.batch_id).exists())

    def _restore(self, rec: journal.Record) -> None:
        """Rewrite what a power cut took of a live journal record (a process that stopped
        leaves its files whole: then nothing to do). Not one set aside: its copy in
        ``failed/`` was on disk before its done mark, which the power cut took."""
        if (self.failed_dir / f"{rec.batch_id}.batch").exists():
            return
        if rec.data:
            path = self._path(rec.batch_id)
            try:
                whole = path.read_bytes() == rec.data
            except FileNotFoundError:
                whole = False
            if not whole:
                log.warning("spooled batch %s restored from the journal", rec.batch_id)
                self._write(path, rec.data)
        if not self.meta(rec.batch_id):
            self._write(self._meta_path(rec.batch_id), rec.meta)

    def _durable(self) -> None:
        """Every spooled batch and status on disk, before the journal that held them goes."""
        for path in [*self.root.glob("*.batch"), *self.root.glob("*.json")]:
            with contextlib.suppress(FileNotFoundError):
                fsync_path(path)
        fsync_path(self.root)

    def close(self) -> None:
        """Stop this process's journal (its segments stay until their batches are done)
        and delete the segments whose batches are: no keeper looks after them once their
        writer stopped (the accept process stops before the server stores what it left),
        and their snapshots must not wait for the next start."""
        with self._journal_lock:
            jr, self._journal = self._journal, None
        if jr is not None:
            jr.close()
        self.bell.close()
        if self.journal_dir.is_dir():
            try:
                journal.reclaim(self.journal_dir, self._settled)
            except OSError as exc:
                log.warning("spool journal: %s", exc)

    def holds(self, batch_id: str) -> bool:
        return self._path(batch_id).exists()

    def count(self) -> int:
        """Batches waiting or being processed."""
        with os.scandir(self.root) as it:
            return sum(1 for e in it if e.name.endswith(".batch"))

    def ids(self) -> list[str]:
        """Spooled batches' ids, oldest first."""
        found = []
        for path in self.root.glob("*.batch"):
            with contextlib.suppress(FileNotFoundError):  # stored meanwhile
                found.append((path.stat().st_mtime_ns, path.stem))
        return [b for _, b in sorted(found)]

    def read(self, batch_id: str) -> Batch | None:
        """One spooled batch (None: gone meanwhile); undecodable: kept as ``.bad``."""
        path = self._path(batch_id)
        try:
            return decode_batch(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:  # CodecError included
            log.error("spooled batch %s does not decode (%s); kept as .bad", path.name, exc)
            path.replace(path.with_suffix(".bad"))
            return None

    def settled(self) -> list[str]:
        """Ids of :meth:`put_done` statuses not yet recorded."""
        return [path.stem for path in self.root.glob("*.json")
                if not self.holds(path.stem) and self.meta(path.stem).get("state") == "done"]

    def _live(self, batch_id: str, meta: dict[str, Any] | None = None) -> bool:
        """Its meta stands for a batch: spooled, or settled (:meth:`put_done`); not one
        whose writer stopped between the meta and the batch (never acknowledged)."""
        if self.holds(batch_id):
            return True
        return (self.meta(batch_id) if meta is None else meta).get("state") == "done"

    def metas(self) -> dict[str, dict[str, Any]]:
        """Every spooled batch's and settled status's meta, by batch id."""
        return {p.stem: m for p in self.root.glob("*.json")
                if (m := self.meta(p.stem)) and self._live(p.stem, m)}

    def meta(self, batch_id: str) -> dict[str, Any]:
        """The ``meta`` a pending batch was put with ({} if none or unreadable)."""
        try:
            return dict(json.loads(self._meta_path(batch_id).read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def _done(self, meta: dict[str, Any]) -> None:
        """Mark done the journal record a status names (its batch stored or set aside)."""
        loc = meta.get("journal")
        if isinstance(loc, list) and len(loc) == 2:
            journal.mark_done(str(loc[0]), int(loc[1]), self.journal_dir)

    def remove(self, batch_id: str) -> None:
        self._done(self.meta(batch_id))
        self._path(batch_id).unlink(missing_ok=True)
        self._meta_path(batch_id).unlink(missing_ok=True)

    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    def set_aside(self, batch_id: str) -> None:
        """Keep a failed batch's file out of the way of the next start (on disk before
        its journal record is done)."""
        meta = self.meta(batch_id)
        moved = False
        for path in (self._path(batch_id), self._meta_path(batch_id)):
            if path.exists():
                make_dir(self.failed_dir)
                fsync_path(path)
                path.replace(self.failed_dir / path.name)
                moved = True
        if moved:
            fsync_path(self.failed_dir)
        self._done(meta)

    def forget_failed_before(self, cutoff: float,
                             retention: Callable[[str], datetime] | None = None) -> int:
        """Delete set-aside (failed) and undecodable batches accepted before ``cutoff``
        (a POSIX time): they hold camera snapshots, kept for a replay, not for ever.
        ``retention`` (a tenant -> its retention cutoff): a failed batch whose every
        snapshot is older than its tenant's cutoff goes too, whenever it was accepted,
        since a tenant's retention shorter than ``cutoff`` must bind its snapshots as it
        binds its sightings. Returns the batches deleted."""
        paths = [*self.failed_dir.glob("*.batch"), *self.failed_dir.glob("*.json")] \
            if self.failed_dir.is_dir() else []
        paths += list(self.root.glob("*.bad"))
        gone = 0
        for path in paths:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone += path.suffix != ".json"
            except FileNotFoundError:
                continue
        if retention is not None and self.failed_dir.is_dir():
            for path in self.failed_dir.glob("*.batch"):
                if self._past_retention(path, retention):
                    path.unlink(missing_ok=True)
                    self.failed_dir.joinpath(f"{path.stem}.json").unlink(missing_ok=True)
                    gone += 1
        return gone

    @staticmethod
    def _past_retention(path: Path, retention: Callable[[str], datetime]) -> bool:
        """The failed batch at ``path`` is past its tenant's retention."""
        try:
            batch = decode_batch(path.read_bytes())
        except (OSError, ValueError):  # gone meanwhile, or kept for a person to look at
            return False
        return past_retention(batch, retention)

    def replay_failed(self) -> list[str]:
        """Move every set-aside batch back in line (run at the next start); returns ids."""
        ids = []
        for path in sorted(self.failed_dir.glob("*.batch")) if self.failed_dir.is_dir() else []:
            path.replace(self.root / path.name)
            meta = self.failed_dir / f"{path.stem}.json"
            if meta.exists():
                meta.replace(self.root / meta.name)
            ids.append(path.stem)
        if ids:
            fsync_path(self.root)
        return ids

    def pending(self) -> list[Batch]:
        """Spooled batches, oldest first. A file that does not decode is renamed
        ``.bad`` and logged, not dropped silently."""
        return [b for i in self.ids() if (b := self.read(i)) is not None]
