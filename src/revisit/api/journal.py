"""The spool's write-ahead journal: what makes an accepted batch durable with one
``fdatasync`` of blocks already on disk, instead of creating, fsyncing and renaming files.

Creating a file and renaming it are metadata changes: making them durable waits for the
filesystem's journal commit, which under load waits for every other writer's (the store's)
data. Overwriting blocks a file already holds needs no metadata change, so ``fdatasync``
only writes those blocks. Each writing process appends records to its own *segments*:
files filled with zeros, fsynced and named ahead of need by a background thread, so the
request path never creates one. A record is a header (magic, state, lengths, CRC32), the
batch id, its status meta and the encoded batch; the spool writes its usual files after it
without fsync. Removing a spooled batch marks its record done (one byte, no fsync: a mark a
power cut loses means the batch runs again, which stores nothing twice).

A segment is deleted once every record in it is done (or its files are gone) and no
process holds it (``flock``: the writer keeps its current and its spare segment locked).
A writer starts a new segment after ``ROLL_S`` even when the current one has room, so a
stored batch's copy here is gone within about a minute, not when the segment fills.
At the server's start :meth:`Journal.recover` restores a live record's files that a power
cut took (or left short), fsyncs the spool's files and deletes the segments.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from revisit.ingest.durable import fsync_path, make_dir

log = logging.getLogger(__name__)

MAGIC = b"RVJ1"
LIVE, DONE = 1, 2
# magic, state, id length, meta length, batch length, CRC32 of id + meta + batch
_HEADER = struct.Struct("<4sBxHIII")
SEGMENT_BYTES = 8 * 1024 * 1024
ROLL_S = 60.0  # a segment in use this long is closed (its records then go with it)
KEEP_S = 5.0  # how often the keeper looks (spare, roll, deletions)
SETTLE_S = 30.0


@dataclass(frozen=True)
class Record:
    segment: Path
    offset: int
    state: int
    batch_id: str
    meta: bytes
    data: bytes


class Segment:
    """One open segment: its file descriptor, held with ``flock`` while this process
    writes it or keeps it as its spare (no other process deletes it meanwhile)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.offset = 0
        self.opened = time.monotonic()

    @classmethod
    def make(cls, root: Path, size: int) -> Segment:
        """A new segment of ``size`` zero bytes, on disk (data and name) before use."""
        name = f"{os.getpid()}-{time.time_ns()}.seg"
        tmp = root / f"{name}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            block = bytes(1024 * 1024)
            for start in range(0, size, len(block)):
                os.pwrite(fd, block[:min(len(block), size - start)], start)
            os.fsync(fd)
            tmp.replace(root / name)
            fsync_path(root)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(root / name, fd)

    def close(self) -> None:
        os.close(self.fd)  # the lock goes with it


def records(path: Path, whole: bool = True) -> Iterator[Record]:
    """A segment's records, in order; stops at the first blank or torn one (a writer
    stopped mid-record: never acknowledged). ``whole=False``: states and batch ids only
    (no meta, no data, no checksum: what deciding on a segment's deletion needs)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; a generator)
    except FileNotFoundError:
        return
    with fh:
        size = os.fstat(fh.fileno()).st_size
        off = 0
        while off + _HEADER.size <= size:
            head = os.pread(fh.fileno(), _HEADER.size, off)
            magic, state, n_id, n_meta, n_data, crc = _HEADER.unpack(head)
            end = off + _HEADER.size + n_id + n_meta + n_data
            if magic != MAGIC or end > size:
                return
            if whole:
                body = os.pread(fh.fileno(), end - off - _HEADER.size, off + _HEADER.size)
                if zlib.crc32(body) != crc:
                    return
                yield Record(path, off, state, body[:n_id].decode(errors="replace"),
                             body[n_id:n_id + n_meta], body[n_id + n_meta:])
            else:
                bid = os.pread(fh.fileno(), n_id, off + _HEADER.size)
                yield Record(path, off, state, bid.decode(errors="replace"), b"", b"")
            off = end


def _set_done(fd: int, offset: int) -> None:
    os.pwrite(fd, bytes([DONE]), offset + 4)  # the state byte, after the magic


def _take(path: Path) -> int | None:
    """``path`` opened and locked; None when it is gone meanwhile, or held by a writer
    (its current or spare segment)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def reclaim(root: Path, settled: Callable[[Record], bool]) -> int:
    """Delete every segment no process holds whose records are all done or ``settled``
    (their batch gone from the spool anyway); returns how many."""
    gone = 0
    for path in sorted(root.glob("*.seg")):
        if (fd := _take(path)) is None:
            continue
        try:
            recs = list(records(path, whole=False))
            if all(r.state == DONE for r in recs) or (
                    # a record's files are written just after it: a live record
                    # without files counts as settled only once the segment is quiet
                    time.time() - os.fstat(fd).st_mtime > SETTLE_S
                    and all(r.state == DONE or settled(r) for r in recs)):
                path.unlink(missing_ok=True)
                gone += 1
        finally:
            os.close(fd)
    return gone


def mark_done(segment: str, offset: int, root: Path) -> None:
    """Mark the record at ``offset`` of ``segment`` (a name in ``root``) done; a segment
    already deleted (the server restarted since) needs nothing."""
    path = root / segment
    if path.parent != root or not path.name.endswith(".seg"):
        return  # not a location this journal gave out
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        _set_done(fd, offset)
    finally:
        os.close(fd)


class Journal:
    """The appending side, one per writing process (started on its first append)."""

    def __init__(self, root: Path, segment_bytes: int | None = None,
                 settled: Callable[[Record], bool] | None = None) -> None:
        """``settled``: whether a live record's batch is gone from the spool anyway (its
        files removed), so its segment may be deleted."""
        self.root = root
        self.segment_bytes = segment_bytes or SEGMENT_BYTES
        self.settled = settled or (lambda rec: False)
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._spare: Segment | None = None
        self._spare_ready = threading.Condition(self._lock)
        self._keeper: threading.Thread | None = None
        self._closed = False

    def append(self, batch_id: str, meta: bytes, data: bytes) -> tuple[str, int] | None:
        """Write one record and fdatasync it; its location, or None when it is larger
        than a segment (the caller keeps it durable another way)."""
        head = _HEADER.size + len(batch_id.encode()) + len(meta)
        size = head + len(data)
        if size > self.segment_bytes:
            return None
        bid = batch_id.encode()
        header = _HEADER.pack(MAGIC, LIVE, len(bid), len(meta), len(data),
                              zlib.crc32(data, zlib.crc32(meta, zlib.crc32(bid))))
        with self._lock:
            self._start()
            seg = self._current
            if seg is None or seg.offset + size > self.segment_bytes:
                seg = self._roll()
            offset = seg.offset
            seg.offset += size
            try:
                # under the lock: a roll by another thread closes this descriptor
                if os.pwritev(seg.fd, [header, bid, meta, data], offset) != size:
                    raise OSError(errno.EIO, f"short write to {seg.path.name}")
                os.fdatasync(seg.fd)
            except OSError:
                self._retire(seg, offset)
                raise
        return seg.path.name, offset

    def _retire(self, seg: Segment, offset: int) -> None:
        """After a failed append: reading a segment stops at a blank or torn record, so a
        record written after this one would not be found at the next start; the next
        append takes a fresh segment. The record, if whole, is marked done (its batch was
        not accepted). Called with the lock."""
        with contextlib.suppress(OSError):
            _set_done(seg.fd, offset)
        seg.close()
        self._current = None

    def start(self) -> None:
        """Start the keeper, which makes the first segment ready (else the first append
        makes it)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._keeper is None and not self._closed:
            make_dir(self.root)
            self._keeper = threading.Thread(target=self._keep, name="spool-journal",
                                            daemon=True)
            self._keeper.start()

    def _roll(self) -> Segment:
        """The spare becomes current (made here if the keeper has none ready yet); the
        old current one is closed and left for :meth:`reclaim`. Called with the lock."""
        spare = self._spare
        if spare is None:
            spare = Segment.make(self.root, self.segment_bytes)
        self._spare = None
        spare.opened = time.monotonic()  # its minute starts now, not when it was made
        old, self._current = self._current, spare
        if old is not None:
            old.close()
        self._spare_ready.notify_all()
        return spare

    def _keep(self) -> None:
        while not self._closed:
            try:
                with self._lock:
                    need = self._spare is None
                if need:
                    spare = Segment.make(self.root, self.segment_bytes)
                    with self._lock:
                        if self._spare is None and not self._closed:
                            self._spare, spare = spare, None
                    if spare is not None:  # closed meanwhile, or one made by a roll
                        spare.path.unlink(missing_ok=True)
                        spare.close()
                with self._lock:
                    seg = self._current
                    if (seg is not None and seg.offset
                            and time.monotonic() - seg.opened >= ROLL_S and self._spare):
                        self._roll()
                self.reclaim()
            except Exception:  # a keeper that stopped would leave segments for ever
                log.exception("spool journal keeper")
            with self._lock:
                if not self._closed:
                    self._spare_ready.wait(KEEP_S)

    def reclaim(self) -> int:
        return reclaim(self.root, self.settled)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._spare_ready.notify_all()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=30)
        with self._lock:
            if self._spare is not None:
                self._spare.path.unlink(missing_ok=True)
            for seg in (self._current, self._spare):
                if seg is not None:
                    seg.close()
            self._current = self._spare = None


def recover(root: Path, restore: Callable[[Record], None],
            durable: Callable[[], None]) -> int:
    """At the server's start, before any writer: ``restore`` every live record (the spool
    rewrites what a power cut took), ``durable`` (the spool fsyncs its files), then delete
    the segments no process holds. Returns the live records seen."""
    held: list[tuple[Path, int]] = []
    live = 0
    try:
        for path in sorted(root.glob("*.seg")) if root.is_dir() else []:
            if (fd := _take(path)) is None:  # deleted meanwhile, or a writer's
                continue
            held.append((path, fd))
            for rec in records(path):
                if rec.state == LIVE:
                    live += 1
                    restore(rec)
        durable()
        for path, _ in held:
            path.unlink(missing_ok=True)
    finally:
        for _, fd in held:
            os.close(fd)
    for tmp in root.glob("*.seg.tmp") if root.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return live
