"""The on-site camera agent: sample snapshots, batch them, deliver them to the server.

Every batch is written to a disk spool *before* any attempt to send it, and deleted only
after the server answered 202; it is fsynced before anything relies on it. So neither a
server restart, a network outage, the agent being killed, nor a power cut loses a
snapshot; and because each snapshot's ``image_id`` is derived from camera and timestamp,
a batch sent twice (sent, then killed before the spool entry was deleted) is not counted
twice by the server.

The spool is bounded (``max_spool_bytes``): when full, sampling waits for the sender rather
than dropping the oldest snapshots, which would silently lose data.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import cv2
import httpx

from revisit.image_formats import (
    ACCEPTED_FORMATS,
    IMAGE_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    refusal,
    still_format,
)
from revisit.ingest.durable import fsync_path, make_dir, write_synced
from revisit.ingest.video import frame_image_id
from revisit.records import Frame

log = logging.getLogger(__name__)


class PermanentRejection(Exception):
    """The server refused a batch for a reason a retry cannot fix (4xx other than 429)."""


class SplitBatch(PermanentRejection):
    """A batch of several frames refused as too large (413) or for one bad frame (422):
    sent again in halves, so only what the server refuses by itself is given up."""


class SpoolBusy(RuntimeError):
    """Another agent holds the spool folder (each agent needs its own)."""


class SpoolWriteError(RuntimeError):
    """A batch could not be written to the spool (a full disk, no permission): sampling
    cannot go on without losing what it samples."""


class SetupRejection(Exception):
    """The server refused the agent itself (its key, an unregistered camera): every batch
    would be refused the same way until the setup is fixed, so none is given up."""


@dataclass(slots=True)
class AgentStats:
    sampled: int = 0
    batches_spooled: int = 0
    batches_sent: int = 0
    batches_rejected: int = 0
    snapshots_rejected: int = 0  # refused one by one inside an accepted batch
    send_failures: int = 0
    # --folder: image files not sent for their format (each named in a warning), and
    # files not named as images, left alone (the first few named in the summary)
    files_refused: int = 0
    files_ignored: int = 0
    ignored_names: list[str] = field(default_factory=list)

    def ignored(self, name: str) -> None:
        self.files_ignored += 1
        if len(self.ignored_names) < 3:
            self.ignored_names.append(name)


TIME_SOURCES = ("mtime", "exif", "name")
# 20240105T093000, 2024-01-05_09-30-00, 20240105_093000, 2024-01-05T09:30:00Z,
# 20240105093000123 (milliseconds), ...; an offset only where it is one (+0100, -05:00,
# +05:45): a trailing counter such as -0001 is not (see _name_offset)
_NAME_TS = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_ -]?(\d{2})([-_:.]?)(\d{2})[-_:.]?"
                      r"(\d{2})(?:[.,]?(\d{3}))?(?!\d)"
                      r"(Z|[+-](?:0\d|1[0-4]):?(?:00|15|30|45)(?![\d:]))?")
# UTC offsets in use somewhere (minutes): whole hours from -12 to +14 and the zones off
# the hour, summer time included (-02:30 Newfoundland) and those of the last decade
# (-04:30 Caracas, +08:30 Pyongyang, +11:30 Norfolk); a -0030 or +0215 after a time is a
# counter, not an offset
_REAL_OFFSETS = {60 * h for h in range(-12, 15)} | {
    -570, -270, -210, -150, 210, 270, 330, 345, 390, 510, 525, 570, 630, 690, 765, 825}
_EXIF_IFD, _DATETIME_ORIGINAL, _OFFSET_ORIGINAL = 0x8769, 36867, 36881


def snapshot_time(path: Path, source: str = "mtime", zone: tzinfo | None = None) -> datetime:
    """When a snapshot file was taken: its modification time (``mtime``), the EXIF
    DateTimeOriginal its camera wrote (``exif``), or a timestamp in its name (``name``).
    EXIF and name times without an offset are read in ``zone`` (default: this machine's,
    with its daylight-saving rules at that time, not today's offset).
    Raises ValueError naming the file when the source holds no time."""
    if source == "mtime":
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
    if source == "name":
        m = _NAME_TS.search(path.stem)
        if m is None:
            raise ValueError(f"{path.name}: no timestamp in the name (e.g. 20240105T093000)")
        y, mo, d, h, sep, mi, s, ms, off = m.groups()
        try:
            naive = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s),
                             int(ms or 0) * 1000)
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from None
        return _with_offset(naive, _name_offset(off, sep), zone, path)
    if source == "exif":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                ifd = img.getexif().get_ifd(_EXIF_IFD)
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path.name}: cannot read EXIF: {exc}") from None
        raw = ifd.get(_DATETIME_ORIGINAL)
        if not raw:
            raise ValueError(f"{path.name}: no EXIF DateTimeOriginal")
        try:
            naive = datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            raise ValueError(f"{path.name}: EXIF DateTimeOriginal {raw!r} is not a time") from None
        return _with_offset(naive, ifd.get(_OFFSET_ORIGINAL), zone, path)
    raise ValueError(f"unknown time source {source!r} (one of {', '.join(TIME_SOURCES)})")


_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def _name_offset(offset: str | None, time_sep: str) -> str | None:
    """The offset a file name's time carries, or None where the digits after the time are
    a counter: ``-0100`` after ``09-30-00`` (a time written with separators, whose own
    offset would be written ``-01:00``), or digits that are no offset anywhere (``-0030``).
    ``20240105T093000-0500`` and ``2024-01-05T09:30:00-05:00`` keep theirs."""
    if offset is None or offset == "Z":
        return offset
    # a counter follows a time written 09-30-00 (or 09_30_00) with a hyphen; after
    # 09:30:00 a -0500 is the offset strftime's %z writes, and a + is never a counter
    if ":" not in offset and time_sep not in ("", ":") and offset[0] == "-":
        return None
    digits = offset[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return offset if (-minutes if offset[0] == "-" else minutes) in _REAL_OFFSETS else None


def _with_offset(naive: datetime, offset: str | None, zone: tzinfo | None,
                 path: Path) -> datetime:
    """``naive`` at ``offset`` (``+01:00``, ``-0500``, ``Z``), or in ``zone`` if there is none
    (a blank EXIF offset, which the standard allows, is none; no zone: this machine's local
    time, whose offset at ``naive`` may differ from today's)."""
    offset = (offset or "").strip("\x00 ")
    if not offset:
        if zone is None:  # a naive datetime's astimezone() applies the local rules at it
            return naive.astimezone(UTC)
        return naive.replace(tzinfo=zone).astimezone(UTC)
    if offset == "Z":
        return naive.replace(tzinfo=UTC)
    m = _OFFSET.match(offset)
    if m is None or int(m.group(2)) > 14 or int(m.group(3)) > 59:
        raise ValueError(f"{path.name}: {offset!r} is not a UTC offset")
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return naive.replace(tzinfo=timezone(-delta if m.group(1) == "-" else delta)).astimezone(UTC)


def file_key(path: Path) -> str:
    """A folder file as the agent remembers having spooled it: name, size and modification
    time (a file replaced under the same name is a new snapshot)."""
    st = path.stat()
    return f"{path.name}\t{st.st_size}\t{st.st_mtime_ns}"


def folder_snapshots(folder: Path, camera_id: str, location_id: str = "",
                     time_from: str = "mtime", zone: tzinfo | None = None,
                     skip: set[str] | None = None,
                     settled_before: float | None = None,
                     deferred: list[str] | None = None,
                     stats: AgentStats | None = None) -> Iterator[Frame]:
    """Images of a folder, in name order, each at its :func:`snapshot_time`; a file whose
    time cannot be read is skipped with a warning naming it, as is an image in a format
    the server does not take (by its content, whatever its name; counted in ``stats``);
    files not named as images are left alone, counted in ``stats``. With ``skip``: files
    whose :func:`file_key` is in it are left out (spooled by an earlier run or pass), and
    each file taken or warned about joins it. A file modified after ``settled_before``
    (Unix time) is left for a later pass (it may be half-written), its name added to
    ``deferred``."""
    listing = sorted(folder.iterdir())
    # a snapshot's id holds its file's stem, as it always did (a --resend is counted once);
    # files of one stem (snap.jpg, snap.png of one second) are told apart by their whole
    # name, all but the first in name order
    first_of_stem: dict[str, Path] = {}
    for p in listing:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            first_of_stem.setdefault(p.stem, p)
    for path in listing:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES:
            said = f"{path.name}\tignored"
            if stats is not None and said not in (skip or ()) and path.is_file():
                stats.ignored(path.name)
                if skip is not None:
                    skip.add(said)
            continue
        # an entry that is no readable file (a folder or a dangling link named *.jpg, a file
        # another process removed since the listing, no permission) is skipped with a
        # warning: it must not stop the run, nor every later run at the same file
        try:
            if not path.is_file():
                raise IsADirectoryError("not a regular file")
            key = file_key(path) if skip is not None else ""
            if key in (skip or ()):
                continue
            if settled_before is not None and path.stat().st_mtime > settled_before:
                if deferred is not None:
                    deferred.append(path.name)
                continue
            if skip is not None:  # taken, or said once (a watched folder is read again)
                skip.add(key)
            if suffix not in OTHER_IMAGE_SUFFIXES:  # not sent: its time is not needed
                ts = snapshot_time(path, time_from, zone)
            data = path.read_bytes()
        except ValueError as exc:
            log.warning("skipping %s", exc)
            continue
        except OSError as exc:
            log.warning("skipping %s: %s", path.name, exc.strerror or exc)
            continue
        fmt = still_format(data[:64])
        if suffix in OTHER_IMAGE_SUFFIXES or fmt not in ACCEPTED_FORMATS:
            log.warning("not sending %s: %s", path.name, refusal(data)
                        if fmt not in ACCEPTED_FORMATS else
                        f"it holds a {fmt} image but is named {suffix}: rename it to send it")
            if stats is not None:
                stats.files_refused += 1
            continue
        yield Frame(
            tenant="", camera_id=camera_id, location_id=location_id,
            image_id=frame_image_id("", camera_id, ts) + "-" + _name_part(
                path.stem if first_of_stem.get(path.stem) == path else path.name), ts=ts,
            data=data, source=str(path),
        )


def settled_folder(folder: Path, camera_id: str, *, time_from: str = "mtime",
                   zone: tzinfo | None = None, skip: set[str], settle_s: float = 2.0,
                   rounds: int = 5, stats: AgentStats | None = None) -> Iterator[Frame]:
    """One pass over a folder (a run from cron over a folder cameras upload to). A file
    written to within ``settle_s`` may be half-written: it is read once it has been left
    alone that long, so its half is never spooled (the complete file, of the same id,
    would be a duplicate to the server). One still written to after ``rounds`` waits is
    left for the next run, with a warning."""
    deferred: list[str] = []
    yield from folder_snapshots(folder, camera_id, time_from=time_from, zone=zone,
                                skip=skip, settled_before=time.time() - settle_s,
                                deferred=deferred, stats=stats)
    for _ in range(rounds):
        if not deferred:
            return
        time.sleep(settle_s)
        deferred.clear()
        yield from folder_snapshots(folder, camera_id, time_from=time_from, zone=zone,
                                    skip=skip, settled_before=time.time() - settle_s,
                                    deferred=deferred, stats=stats)
    if deferred:
        log.warning("%d file(s) still being written, left for the next run: %s",
                    len(deferred), ", ".join(deferred[:5]))


def watch_folder(folder: Path, camera_id: str, *, time_from: str = "mtime",
                 zone: tzinfo | None = None, skip: set[str], every_s: float,
                 stop: threading.Event, settle_s: float = 2.0,
                 stats: AgentStats | None = None) -> Iterator[Frame | None]:
    """A folder cameras keep writing to, pass after pass until ``stop``: each pass yields
    the files not seen yet (``skip`` grows with them), then None (send what the pass gave
    now), and waits ``every_s``. A file written to within ``settle_s`` waits for the next
    pass (it may be half-written)."""
    while not stop.is_set():
        yield from folder_snapshots(folder, camera_id, time_from=time_from, zone=zone,
                                    skip=skip, settled_before=time.time() - settle_s,
                                    stats=stats)
        yield None
        stop.wait(every_s)


def _name_part(stem: str) -> str:
    """The file's name in its snapshot's id: two files of one camera and second are two
    snapshots. A long name is cut and its whole given by a hash (names that shared their
    first 40 characters were one id)."""
    if len(stem) <= 40:
        return stem
    return stem[:31] + "~" + hashlib.sha256(stem.encode()).hexdigest()[:8]


class Spool:
    """Batches on disk, oldest first: ``<dir>/<seq>-<uuid>/{meta.json, 0.jpg, ...}``.

    A batch directory is built under a temporary name, its files and the directory
    fsynced, and renamed into place (the rename fsynced too), so neither a reader nor a
    power cut ever leaves half a batch, or loses one whose files were noted as spooled.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        make_dir(self.root)
        # one agent per spool: two would send each other's batches (with each other's keys)
        self._lock = open(root / ".lock", "a")  # noqa: SIM115 (held for the spool's life)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolBusy(f"another agent is using the spool {root}: give each agent its "
                            "own --spool") from None
        self.rejected_dir = root.parent / (root.name + "-rejected")
        self._seq = self._last_seq()
        self.changed = threading.Condition()
        # refused batches that could not be set aside (the agent's): spooled, not sent
        # again by this run, so a put does not wait for them to leave
        self.kept: set[str] = set()
        for stale in self.root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.rejected_dir.is_dir():  # what a kill left while setting a batch aside
            for stale in self.rejected_dir.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            for half in self.rejected_dir.glob("*-snapshots.json.tmp"):
                half.unlink(missing_ok=True)
            for image in self.rejected_dir.glob("*/*.jpg"):
                image.unlink(missing_ok=True)
        # a running total, read from disk once: summing every spooled file on each write
        # would cost more the longer the server is away
        self._bytes = sum(self._batch_bytes(p) for p in self.pending())

    def _last_seq(self) -> int:
        seqs = [int(p.name.split("-", 1)[0]) for p in self.root.iterdir() if p.name[:1].isdigit()]
        return max(seqs, default=0)

    def pending(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[:1].isdigit())

    def size(self) -> int:
        """Bytes of the batches in the spool."""
        return self._bytes

    @staticmethod
    def _batch_bytes(batch_dir: Path) -> int:
        try:
            with os.scandir(batch_dir) as entries:
                return sum(e.stat().st_size for e in entries if e.is_file())
        except OSError:  # gone meanwhile
            return 0

    def _changed_by(self, delta: int) -> None:
        """Keep the running size, and wake a put waiting for room."""
        with self.changed:
            self._bytes += delta
            self.changed.notify_all()

    def put(self, frames: list[Frame], stop: threading.Event) -> Path:
        """Write a batch; waits while the spool is over its bound (back-pressure)."""
        incoming = sum(len(f.data or b"") for f in frames)
        with self.changed:
            while (self.size() + incoming > self.max_bytes and not stop.is_set()
                   and any(p.name not in self.kept for p in self.pending())):
                log.warning("spool full (%d bytes): waiting for the server", self.size())
                self.changed.wait(timeout=1.0)
        self._seq += 1
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        meta = []
        for i, f in enumerate(frames):
            name = f"{i}.jpg"
            write_synced(tmp / name, f.data or b"")
            meta.append({"file": name, "camera_id": f.camera_id, "ts": f.ts.isoformat(),
                         "image_id": f.image_id})
        meta_bytes = json.dumps(meta).encode()
        write_synced(tmp / "meta.json", meta_bytes)
        fsync_path(tmp)
        final = self.root / f"{self._seq:012d}-{uuid.uuid4().hex[:8]}"
        os.replace(tmp, final)
        fsync_path(self.root)
        self._changed_by(incoming + len(meta_bytes))
        return final

    def close(self) -> None:
        self._lock.close()

    def _ledger(self, camera_id: str) -> Path:
        return self.root / f".spooled-{hashlib.sha256(camera_id.encode()).hexdigest()[:12]}"

    def spooled_files(self, camera_id: str, folder: Path) -> set[str]:
        """The :func:`file_key` of the folder's files earlier runs spooled for this camera,
        forgetting those no longer in the folder (the list stays as large as the folder)."""
        ledger = self._ledger(camera_id)
        if not ledger.exists():
            return set()
        keys = set(ledger.read_text().splitlines())
        present = {p.name for p in folder.iterdir()}
        kept = {k for k in keys if k.split("\t", 1)[0] in present}
        if kept != keys:
            tmp = ledger.with_suffix(".tmp")
            write_synced(tmp, "".join(f"{k}\n" for k in sorted(kept)).encode())
            os.replace(tmp, ledger)
            fsync_path(self.root)
        return kept

    def note_spooled(self, camera_id: str, keys: Iterable[str]) -> None:
        """Remember folder files as spooled (after the batch holding them is on disk)."""
        ledger = self._ledger(camera_id)
        new = not ledger.exists()
        with open(ledger, "a") as fh:
            fh.writelines(f"{k}\n" for k in keys)
            fh.flush()
            os.fsync(fh.fileno())
        if new:  # a ledger lost to a power cut would send the folder again
            fsync_path(self.root)

    def note_rejected(self, batch_dir: Path, rejected: list[dict[str, str]]) -> None:
        """Snapshots the server refused one by one in a batch it accepted: their metadata
        and reasons kept beside the refused batches (no image)."""
        meta = {m["file"]: m for m in json.loads((batch_dir / "meta.json").read_text())}
        make_dir(self.rejected_dir)
        final = self.rejected_dir / f"{batch_dir.name}-snapshots.json"
        tmp = final.with_name(final.name + ".tmp")
        write_synced(tmp, json.dumps(
            [{**meta.get(r.get("file", ""), {}), **r} for r in rejected], indent=1).encode())
        os.replace(tmp, final)
        fsync_path(self.rejected_dir)  # on disk before the batch leaves the spool

    def done(self, batch_dir: Path) -> None:
        """Forget a delivered batch. It leaves the spool in one rename before it is
        deleted: an agent killed mid-delete must not leave half a batch (no meta.json, or
        missing images) that the next run would retry for ever; the next start removes
        the ``.tmp-*`` rest."""
        held = self._batch_bytes(batch_dir)
        gone = self.root / f".tmp-{uuid.uuid4().hex}"
        os.replace(batch_dir, gone)
        self._changed_by(-held)
        shutil.rmtree(gone, ignore_errors=True)

    def reject(self, batch_dir: Path, reason: str) -> None:
        """Set a refused batch aside with its metadata and the server's reason; its
        images are deleted (no face image is kept that nobody asked for). It is moved out
        of the spool first, so a kill midway never leaves a batch missing images there;
        images a kill left in ``<spool>-rejected/`` are deleted at the next start. Where
        ``<spool>-rejected/`` is on another filesystem (the spool a mount point), the
        record is copied there whole and the batch then leaves the spool as a sent one
        does. Raises OSError when it cannot be set aside (the batch stays spooled)."""
        make_dir(self.rejected_dir)
        held = self._batch_bytes(batch_dir)
        note = batch_dir / "rejected.txt"
        write_synced(note, reason.encode())
        aside = self.rejected_dir / batch_dir.name
        try:
            os.replace(batch_dir, aside)
        except OSError as exc:
            note.unlink(missing_ok=True)  # the batch stays as it was spooled
            if exc.errno != errno.EXDEV:
                raise
            self._copy_aside(batch_dir, aside, reason)
            return
        fsync_path(self.rejected_dir)
        self._changed_by(-held)
        for image in aside.glob("*.jpg"):
            image.unlink()

    def _copy_aside(self, batch_dir: Path, aside: Path, reason: str) -> None:
        """Set a batch aside across filesystems: its record (no image) appears in
        ``aside`` in one rename, then the batch leaves the spool in one rename; a kill
        between the two sends it again (refused again, set aside again), never half."""
        tmp = self.rejected_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            write_synced(tmp / "meta.json", (batch_dir / "meta.json").read_bytes())
            write_synced(tmp / "rejected.txt", reason.encode())
            fsync_path(tmp)
            if aside.exists():  # set aside by a run killed before the batch left the spool
                shutil.rmtree(aside)
            os.replace(tmp, aside)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_path(self.rejected_dir)
        self.done(batch_dir)

    def split(self, batch_dir: Path) -> None:
        """Cut a batch the server refused whole into two, in place in the sending order
        (the second half's directory name sorts right after the first's)."""
        meta = json.loads((batch_dir / "meta.json").read_text())
        half = len(meta) // 2
        held = self._batch_bytes(batch_dir)
        second: Path | None = None
        try:
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            for m in meta[half:]:
                write_synced(tmp / m["file"], (batch_dir / m["file"]).read_bytes())
            write_synced(tmp / "meta.json", json.dumps(meta[half:]).encode())
            fsync_path(tmp)
            # the new half sorts after the first and before every half split off this
            # batch before (N-2 first, then N-1-2, N-1-1-2, ...)
            k = 0
            while batch_dir.with_name(batch_dir.name + "-1" * k + "-2").exists():
                k += 1
            second = batch_dir.with_name(batch_dir.name + "-1" * k + "-2")
            os.replace(tmp, second)
            # the second half is on disk before the first stops listing it: a power cut
            # here sends it twice (the server counts a frame once), never not at all
            fsync_path(self.root)
            part = batch_dir / ".meta.tmp"
            write_synced(part, json.dumps(meta[:half]).encode())
            os.replace(part, batch_dir / "meta.json")
            fsync_path(batch_dir)
            for m in meta[half:]:
                (batch_dir / m["file"]).unlink(missing_ok=True)
        finally:  # a split cut short (a full disk) may have left the new half in place
            self._changed_by(self._batch_bytes(batch_dir) - held
                             + (self._batch_bytes(second) if second is not None else 0))


class Agent:
    """Spools camera batches and sends them with retries and exponential backoff."""

    def __init__(
        self,
        server: str,
        key: str,
        spool_dir: Path,
        *,
        batch_size: int = 10,
        max_spool_bytes: int = 512 * 1024 * 1024,
        jpeg_quality: int = 90,
        timeout: float = 30.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.batch_size = batch_size
        self.jpeg_quality = jpeg_quality
        self.max_backoff = max_backoff
        self.spool = Spool(spool_dir, max_spool_bytes)
        self.client = httpx.Client(
            base_url=self.server, timeout=timeout, headers={"Authorization": f"Bearer {key}"}
        )
        self.stats = AgentStats()
        self.stop = threading.Event()
        self.refused: str | None = None  # why the server refused the agent itself
        self._backoff = 0.5  # the next wait after a failed send
        self._next_try = 0.0  # time.monotonic() before which no batch is sent
        # --folder: remember the files spooled, so the next run sends only new ones
        self.remember_files_of: str | None = None  # the camera id

    # -- producing --------------------------------------------------------------------
    def _encoded(self, frame: Frame) -> Frame:
        if frame.data is None:
            if frame.pixels is None:
                raise ValueError(f"snapshot {frame.source} has no image")
            ok, buf = cv2.imencode(".jpg", frame.pixels, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise ValueError(f"cannot encode snapshot {frame.source}")
            frame.data = buf.tobytes()
            frame.pixels = None
        return frame

    def spool_frames(self, frames: Iterable[Frame | None]) -> None:
        """Batch and spool; what was sampled is spooled even when the input fails
        (a stream that stops) or the agent is interrupted. A None from the input spools
        the batch so far (a watched folder's pass is over: no waiting for a full batch)."""
        batch: list[Frame] = []
        try:
            for frame in frames:
                if self.stop.is_set():
                    break
                if frame is None:
                    if batch:
                        self._put(batch)
                        batch = []
                    continue
                batch.append(self._encoded(frame))
                self.stats.sampled += 1
                if len(batch) >= self.batch_size:
                    self._put(batch)
                    batch = []
        finally:
            if batch:
                self._put(batch)

    def _put(self, batch: list[Frame]) -> None:
        keys = [file_key(Path(f.source)) for f in batch] if self.remember_files_of else []
        try:
            self.spool.put(batch, self.stop)
        except OSError as exc:
            raise SpoolWriteError(f"cannot write the spool {self.spool.root}: "
                                  f"{exc.strerror or exc}") from exc
        self.stats.batches_spooled += 1
        if self.remember_files_of:
            self.spool.note_spooled(self.remember_files_of, keys)

    # -- sending ----------------------------------------------------------------------
    def send_one(self, batch_dir: Path) -> list[dict[str, str]]:
        """POST one spooled batch; returns the snapshots the server refused one by one in
        accepting it; raises on failure (httpx errors or PermanentRejection)."""
        meta = json.loads((batch_dir / "meta.json").read_text())
        files = [("images", (m["file"], (batch_dir / m["file"]).read_bytes(), "image/jpeg"))
                 for m in meta]
        resp = self.client.post("/v1/batches", data={"metadata": json.dumps(meta)}, files=files)
        if resp.status_code == 202:
            try:
                refused = resp.json().get("rejected") or []
            except ValueError:
                refused = []
            return [r for r in refused if isinstance(r, dict)]
        if resp.status_code == 429 or resp.status_code >= 500:
            raise httpx.HTTPStatusError(
                f"server busy ({resp.status_code})", request=resp.request, response=resp
            )
        text = f"{resp.status_code}: {resp.text[:300]}"
        if resp.status_code in (404, 405):  # no batch API at --server (a wrong path, a proxy)
            raise SetupRejection(f"{text} (is --server {self.server} the revisit server?)")
        if resp.status_code in (401, 403) or (
                resp.status_code == 422 and "is not registered" in resp.text):
            raise SetupRejection(text)
        if resp.status_code in (413, 422) and len(meta) > 1:
            raise SplitBatch(text)
        raise PermanentRejection(text)

    def drain(self, until_empty_within: float | None = None) -> bool:
        """Send spooled batches oldest first, backing off while the server is unreachable.

        Returns True when the spool is empty. With ``until_empty_within`` it gives up after
        that many seconds (the spool stays on disk for the next run).
        """
        deadline = None if until_empty_within is None else time.monotonic() + until_empty_within
        while self.refused is None:
            pending = [p for p in self.spool.pending() if p.name not in self.spool.kept]
            if not pending:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            if self.stop.is_set():  # SIGTERM: what is left stays spooled
                return False
            # the backoff holds across calls (the sender calls this every second while
            # sampling goes on): the next try waits for it, not for the call's deadline
            hold = self._next_try - time.monotonic()
            if hold > 0:
                if deadline is not None:
                    hold = min(hold, max(0.0, deadline - time.monotonic()))
                if self.stop.wait(hold):
                    return False
                if time.monotonic() < self._next_try:
                    return False  # the deadline came first
            try:
                refused = self.send_one(pending[0])
            except SetupRejection as exc:
                log.error("the server refused this agent (%s): batches stay in the spool; "
                          "fix the key or register the camera, then run the agent again", exc)
                self.refused = str(exc)
                self.stop.set()
                return False
            except SplitBatch as exc:
                log.warning("%s: sending %s in two halves", exc, pending[0].name)
                try:
                    self.spool.split(pending[0])
                except OSError as err:  # cannot split on disk: set aside, not stuck on it
                    log.error("cannot split %s (%s): set aside", pending[0].name, err)
                    self._set_aside(pending[0], f"{exc}; and cannot split it: {err}")
                continue
            except PermanentRejection as exc:
                log.error("server rejected %s: %s", pending[0].name, exc)
                self._set_aside(pending[0], str(exc))
                continue
            except (httpx.HTTPError, OSError) as exc:
                self.stats.send_failures += 1
                wait = self._backoff
                retry_after = getattr(getattr(exc, "response", None), "headers", {}).get("retry-after")
                if retry_after and str(retry_after).isdigit():
                    wait = max(wait, float(retry_after))
                log.warning("send failed (%s); retrying in %.1f s", exc, wait)
                self._next_try = time.monotonic() + wait
                self._backoff = min(self._backoff * 2, self.max_backoff)
                continue
            if refused:
                for r in refused:
                    log.error("server refused snapshot %s of %s: %s", r.get("image_id") or
                              r.get("file"), pending[0].name, r.get("reason"))
                self.spool.note_rejected(pending[0], refused)
                self.stats.snapshots_rejected += len(refused)
            self.spool.done(pending[0])
            self.stats.batches_sent += 1
            self._backoff, self._next_try = 0.5, 0.0
        return False

    def _set_aside(self, batch_dir: Path, reason: str) -> None:
        """Set a refused batch aside; one that cannot be (no room, no permission) stays in
        the spool for the next run, and the sender goes on with the others."""
        try:
            self.spool.reject(batch_dir, reason)
        except OSError as exc:
            log.error("cannot set %s aside in %s (%s): it stays in the spool for the next "
                      "run", batch_dir.name, self.spool.rejected_dir, exc.strerror or exc)
            self.spool.kept.add(batch_dir.name)
            return
        self.stats.batches_rejected += 1

    def run(self, frames: Iterable[Frame | None],
            drain_timeout: float | None = None) -> AgentStats:
        """Sample into the spool in this thread while a sender thread drains it."""
        sender = threading.Thread(target=self._send_loop, name="agent-sender", daemon=True)
        sender.start()
        try:
            self.spool_frames(frames)
        except KeyboardInterrupt:
            self.stop.set()
            raise
        finally:
            self._producing_done = True
            sender.join()
            if not self.stop.is_set():  # the input ended, or failed: send what it gave
                self.drain(until_empty_within=drain_timeout)
        return self.stats

    _producing_done = False

    def _send_loop(self) -> None:
        while not self.stop.is_set():
            empty = self.drain(until_empty_within=1.0)
            if empty and self._producing_done:
                return
            if empty:
                with self.spool.changed:
                    self.spool.changed.wait(timeout=0.5)
            elif self._producing_done:
                return  # the caller's final drain takes over

    def close(self) -> None:
        self.stop.set()
        self.client.close()
        self.spool.close()
