"""The spool's journal: a batch is durable once its record is fdatasynced; a power cut that
takes the spool's (unsynced) files is mended from it at the next start; stored batches do
not come back; segments go once their batches are done."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from revisit.api import journal
from revisit.api.spool import Spool
from revisit.queue.codec import decode_batch
from revisit.records import Batch, Frame


def _frame(i: int, size: int = 100) -> Frame:
    return Frame(tenant="acme", camera_id="camA", location_id="101", image_id=f"img-{i}",
                 ts=datetime(2024, 5, 2, 8, i, tzinfo=UTC), data=bytes([i]) * size)


def _segments(spool: Spool) -> list[Path]:
    return sorted(spool.journal_dir.glob("*.seg"))


def _one_spooled(tmp_path: Path) -> tuple[Spool, journal.Journal, Path]:
    """A spool holding batch B-1, its journal and the segment its record is in."""
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    assert spool._journal is not None
    return spool, spool._journal, spool.journal_dir / spool.meta("B-1")["journal"][0]


def _reclaimed(jr: journal.Journal, seg: Path) -> bool:
    """Whether ``seg`` goes (the writer's keeper thread may hold it a moment: it
    reclaims too)."""
    end = time.monotonic() + 3
    while seg.exists() and time.monotonic() < end:
        jr.reclaim()
        time.sleep(0.01)
    return not seg.exists()


def test_records_read_back_and_a_torn_one_ends_the_segment(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path, segment_bytes=64 * 1024)
    first = j.append("B-1", b'{"a": 1}', b"x" * 1000)
    second = j.append("B-2", b"{}", b"")
    assert first is not None and second is not None and first[0] == second[0]
    path = tmp_path / first[0]
    recs = list(journal.records(path))
    assert [(r.batch_id, r.meta, r.data, r.state) for r in recs] == [
        ("B-1", b'{"a": 1}', b"x" * 1000, journal.LIVE), ("B-2", b"{}", b"", journal.LIVE)]
    journal.mark_done(first[0], first[1], tmp_path)
    assert [r.state for r in journal.records(path)] == [journal.DONE, journal.LIVE]
    # a writer cut off in the middle of a third record: its bytes do not check out
    with open(path, "r+b") as fh:
        end = second[1] + journal._HEADER.size + len(b"B-2") + 2
        fh.seek(end)
        fh.write(journal.MAGIC + b"\x01\x00" + b"\xff" * 30)
    assert len(list(journal.records(path))) == 2
    j.close()


def test_a_record_larger_than_a_segment_is_refused_and_rolls_are_made(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path, segment_bytes=8 * 1024)
    assert j.append("B-big", b"{}", b"x" * 9000) is None
    locs = [j.append(f"B-{i}", b"{}", b"y" * 3000) for i in range(5)]
    assert all(loc is not None for loc in locs)
    names = [loc[0] for loc in locs if loc]
    assert len(set(names)) == 3  # two records fit a segment of 8 KB
    assert all((tmp_path / n).stat().st_size == 8 * 1024 for n in set(names))  # preallocated
    j.close()


def test_spooled_files_lost_in_a_power_cut_are_restored_at_the_next_start(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1), _frame(2)]), {"tenant": "acme", "frames": 2})
    spool.put(Batch("B-2", frames=[_frame(3)]), {"tenant": "acme", "frames": 1})
    spool.put_done("B-3", {"tenant": "acme", "frames": 1, "duplicates": 1})
    spool.put(Batch("B-4", frames=[_frame(4)]), {"tenant": "acme", "frames": 1})
    spool.remove("B-4")  # stored: must not come back
    assert spool.meta("B-1")["journal"][0] == _segments(spool)[0].name
    spool.close()
    # what a power cut can leave of files written without fsync
    (tmp_path / "B-1.batch").unlink()
    (tmp_path / "B-1.json").unlink()
    (tmp_path / "B-2.batch").write_bytes(b"")
    (tmp_path / "B-3.json").unlink()

    again = Spool(tmp_path, clean=True)
    assert set(again.ids()) == {"B-1", "B-2"}
    got = {b.batch_id: b for b in again.pending()}
    assert [f.data for f in got["B-1"].frames] == [bytes([1]) * 100, bytes([2]) * 100]
    assert [f.image_id for f in got["B-2"].frames] == ["img-3"]
    assert again.meta("B-1")["frames"] == 2
    assert again.settled() == ["B-3"]  # its "done" status, for the server to record
    assert "B-4" not in again.ids()
    assert _segments(again) == []  # the files are on disk now: the journal is gone


def test_a_restart_without_a_power_cut_leaves_the_files_as_they_are(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    before = (tmp_path / "B-1.batch").read_bytes()
    spool.close()
    again = Spool(tmp_path, clean=True)
    assert (tmp_path / "B-1.batch").read_bytes() == before
    assert decode_batch(before).batch_id == "B-1"
    assert again.ids() == ["B-1"]


def test_a_set_aside_batch_stays_aside_after_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    spool.set_aside("B-1")
    spool.close()
    again = Spool(tmp_path, clean=True)
    assert again.ids() == []
    assert (again.failed_dir / "B-1.batch").exists()
    assert again.replay_failed() == ["B-1"]


def test_segments_go_once_their_batches_are_done_not_while_a_writer_holds_them(
        tmp_path: Path) -> None:
    spool, jr, current = _one_spooled(tmp_path)
    spool.remove("B-1")
    assert jr.reclaim() == 0  # this writer's current segment (and its spare): held
    assert current.exists()
    with jr._lock:
        jr._roll()  # as the keeper does after journal.ROLL_S
    assert _reclaimed(jr, current)  # the closed one, every record done
    assert len(_segments(spool)) >= 1  # the writer's current one stays
    spool.close()


def test_a_live_record_without_files_lets_its_segment_go_only_when_quiet(
        tmp_path: Path) -> None:
    spool, jr, seg = _one_spooled(tmp_path)
    for name in ("B-1.batch", "B-1.json"):  # gone without its record marked done
        (tmp_path / name).unlink()
    with jr._lock:
        jr._roll()
    jr.reclaim()
    assert seg.exists()  # just written: its files may be on their way
    old = time.time() - journal.SETTLE_S - 1
    os.utime(seg, (old, old))
    assert _reclaimed(jr, seg)
    spool.close()


def test_a_batch_larger_than_a_segment_is_spooled_durably_without_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "SEGMENT_BYTES", 4096)
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1, size=8000)]), {"tenant": "acme"})
    assert "journal" not in json.loads((tmp_path / "B-1.json").read_text())
    assert [f.data for f in spool.pending()[0].frames] == [bytes([1]) * 8000]
    spool.close()


def test_a_failed_append_does_not_hide_the_records_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails (ENOSPC on a copy-on-write filesystem, EIO) leaves a blank or torn
    record, where reading a segment stops: a later, acknowledged record must not follow it."""
    j = journal.Journal(tmp_path, segment_bytes=64 * 1024)
    assert j.append("B-1", b"{}", b"x" * 100) is not None
    real = os.pwritev

    def full(*args: object) -> int:
        monkeypatch.setattr(os, "pwritev", real)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)
    with pytest.raises(OSError):
        j.append("B-2", b"{}", b"y" * 100)
    assert j.append("B-3", b"{}", b"z" * 100) is not None  # space again: answered 202
    found = {r.batch_id: r.state for seg in tmp_path.glob("*.seg")
             for r in journal.records(seg)}
    assert found == {"B-1": journal.LIVE, "B-3": journal.LIVE}
    j.close()


def test_a_batch_whose_spool_files_could_not_be_written_does_not_come_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the record fits its preallocated segment, its status file does not; the
    upload is answered with an error, and a restart must not run it and list its status."""
    spool = Spool(tmp_path)

    def full(path: Path, data: bytes, synced: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "_write", staticmethod(full))
    with pytest.raises(OSError):
        spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    spool.remove("B-1")  # as the door and the processor do on a failed put
    monkeypatch.undo()
    spool.close()
    again = Spool(tmp_path, clean=True)
    assert again.ids() == [] and again.metas() == {}


def test_a_spool_write_that_fails_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file was written and its rename failed: the temporary copy (a camera's
    snapshots) goes at once, not at the next start."""
    spool = Spool(tmp_path)
    real = Path.replace

    def refused(self: Path, target: Path) -> Path:
        if self.name.endswith(".tmp") and not self.name.endswith(".seg.tmp"):
            raise OSError(errno.EIO, "Input/output error")
        return real(self, target)

    monkeypatch.setattr(Path, "replace", refused)
    with pytest.raises(OSError):
        spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    assert not list(tmp_path.glob("*.tmp"))


def test_a_set_aside_batch_stays_aside_when_a_power_cut_took_its_done_mark(
        tmp_path: Path) -> None:
    """set_aside fsyncs the failed copy, then marks the record done without a sync: a power
    cut can leave the record live, and restoring it would run the batch at the next start
    (and leave a second copy in failed/ for a replay to run again)."""
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    seg, offset = spool.meta("B-1")["journal"]
    spool.set_aside("B-1")
    with open(spool.journal_dir / seg, "r+b") as fh:  # the done mark, lost
        fh.seek(offset + 4)
        fh.write(bytes([journal.LIVE]))
    spool.close()
    again = Spool(tmp_path, clean=True)
    assert again.ids() == [] and again.metas() == {}
    assert again.replay_failed() == ["B-1"]


def test_a_closed_journal_does_nothing_more(tmp_path: Path) -> None:
    """Its keeper gone when close() returns: a keeper still reclaiming holds a segment under
    flock a moment, which a start's recover() takes for a writer's and skips (the batch in
    it not restored), or deletes a segment recover() listed."""
    j = journal.Journal(tmp_path, segment_bytes=64 * 1024)
    assert j.append("B-1", b"{}", b"x") is not None
    keeper = j._keeper
    j.close()
    assert keeper is not None and not keeper.is_alive()


def test_a_segment_gone_between_listing_and_opening_does_not_stop_a_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    spool.close()
    gone = spool.journal_dir / "1-1.seg"
    gone.write_bytes(bytes(64))
    real = os.open

    def reclaimed(path: object, *args: object, **kwargs: object) -> int:
        if str(path) == str(gone):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", reclaimed)
    again = Spool(tmp_path, clean=True)
    monkeypatch.undo()
    assert again.ids() == ["B-1"]


def test_stored_batches_copies_do_not_outlive_a_stop(tmp_path: Path) -> None:
    """No keeper runs once its writer stops: the accept process stops first, and the server
    stores what it left; the snapshots' copies in the journal go at the server's stop, not
    at its next start (which may never come)."""
    door, server = Spool(tmp_path), Spool(tmp_path)
    door.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    door.put(Batch("B-2", frames=[_frame(2)]), {"tenant": "acme"})
    server.remove("B-1")
    jr = door._journal
    end = time.monotonic() + 5
    while jr is not None and jr._spare is None and time.monotonic() < end:
        time.sleep(0.01)  # the keeper's spare, made: it makes no other
    door.close()
    assert len(_segments(server)) == 1  # B-2 not stored yet
    server.remove("B-2")
    server.close()
    assert _segments(server) == []


def test_a_spare_that_waited_is_not_rolled_as_soon_as_it_is_used(tmp_path: Path) -> None:
    """A segment's minute counts from when it becomes current, not from when it was made
    as the spare: else every other segment lives one keeper pass (twice the 8 MiB writes
    and fsyncs the keeper makes beside the store's writes)."""
    j = journal.Journal(tmp_path, segment_bytes=64 * 1024)
    assert j.append("B-1", b"{}", b"x") is not None
    with j._lock:
        if j._spare is None:
            j._spare = journal.Segment.make(tmp_path, j.segment_bytes)
        j._spare.opened -= journal.ROLL_S  # the spare for a minute already
        current = j._roll()
    assert time.monotonic() - current.opened < journal.ROLL_S
    j.close()


def test_the_first_uploads_at_once_share_one_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One process, uploads on several threads (cameras reconnecting after a restart): a
    second journal would keep its keeper and two held segments for the process's life."""
    made: list[journal.Journal] = []
    real = journal.Journal.__init__

    def slow(self: journal.Journal, *args: object, **kwargs: object) -> None:
        made.append(self)
        time.sleep(0.2)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(journal.Journal, "__init__", slow)
    spool = Spool(tmp_path)
    threads = [threading.Thread(target=spool.put, args=(Batch(f"B-{i}", frames=[_frame(i)]),
                                                        {"tenant": "acme"}))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    spool.close()
    assert sorted(spool.ids()) == ["B-0", "B-1"]
    assert len(made) == 1


def test_a_prepared_spool_makes_no_segment_on_its_first_upload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.prepare()
    jr = spool._journal
    assert jr is not None
    end = time.monotonic() + 10
    while jr._spare is None and time.monotonic() < end:
        time.sleep(0.01)
    assert _segments(spool)  # made by the keeper, ahead of the first upload

    def on_the_request_path(*args: object, **kwargs: object) -> journal.Segment:
        raise AssertionError("the first upload made a segment")

    monkeypatch.setattr(journal.Segment, "make", on_the_request_path)
    spool.put(Batch("B-1", frames=[_frame(1)]), {"tenant": "acme"})
    assert spool.meta("B-1")["journal"][0] == _segments(spool)[0].name
    monkeypatch.undo()
    spool.close()
