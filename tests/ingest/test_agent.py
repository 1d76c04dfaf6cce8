"""The camera agent against a real `revisit serve` process that is stopped and restarted.

Nothing sampled while the server is down may be lost, and nothing re-sent may be doubled.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmarks.distributed_harness import free_port
from tests.conftest import lfw_photo, lfw_still

from revisit.ingest.agent import Agent, Spool, SpoolBusy, folder_snapshots
from revisit.records import Frame

pytest.importorskip("fastapi")

PEOPLE = [("Colin_Powell", 1), ("Colin_Powell", 2), ("Jean_Chretien", 2), ("Hugo_Chavez", 1),
          ("Jean_Chretien", 3), ("Colin_Powell", 3), ("Colin_Powell", 4), ("Hugo_Chavez", 2)]


def _cli(data: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "revisit.cli", "--data", str(data), *args],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


class Server:
    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env_extra: str) -> None:
        env = {**os.environ, "REVISIT_PIPELINE__THREADS": "1", **env_extra}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "revisit.cli", "--data", str(self.data), "serve",
             "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
            self.proc = None


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Server, str, str, Path]]:
    data = tmp_path / "data"
    _cli(data, "admin", "add-tenant", "acme")
    _cli(data, "admin", "add-location", "--tenant", "acme", "101")
    _cli(data, "admin", "add-camera", "--tenant", "acme", "cam1", "--location", "101")
    cam_key = _cli(data, "admin", "add-key", "--tenant", "acme", "--role", "camera", "--cameras", "cam1")
    analyst = _cli(data, "admin", "add-key", "--tenant", "acme", "--role", "analyst")
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for i, (person, n) in enumerate(PEOPLE):
        dst = folder / f"{i:03d}.jpg"
        shutil.copy(lfw_photo(person, n), dst)
        stamp = 1_704_448_800 + 60 * i  # 2024-01-05T10:00Z, one snapshot a minute
        os.utime(dst, (stamp, stamp))
    server = Server(data, free_port())
    yield server, cam_key, analyst, folder
    server.stop(signal.SIGKILL)


def _sightings(data: Path) -> list[str]:
    out = _cli(data, "sightings", "--tenant", "acme", "--format", "csv")
    return [line for line in out.splitlines()[1:] if line]


def test_agent_survives_a_server_restart_without_loss(setup, tmp_path: Path) -> None:
    server, cam_key, _, folder = setup
    agent = Agent(server.url, cam_key, tmp_path / "spool", batch_size=3, max_backoff=1.0)
    # server down: everything is sampled into the spool, sending fails and backs off
    runner = threading.Thread(target=agent.run, args=(folder_snapshots(folder, "cam1"),),
                              kwargs={"drain_timeout": 120.0})
    runner.start()
    time.sleep(2.0)
    assert agent.stats.sampled == len(PEOPLE)
    assert agent.stats.send_failures >= 1
    assert len(agent.spool.pending()) == 3  # 8 snapshots in batches of 3
    server.start()
    runner.join(timeout=150)
    assert not runner.is_alive()
    assert agent.spool.pending() == []
    assert agent.stats.batches_sent == 3
    # restart the server while idle, then send the same folder again (a re-run of the agent)
    server.stop()
    server.start()
    again = Agent(server.url, cam_key, tmp_path / "spool2", batch_size=3)
    again.run(folder_snapshots(folder, "cam1"), drain_timeout=60.0)
    agent.close()
    again.close()
    server.stop()  # the store is single-writer: read it from the CLI after the server exits
    rows = _sightings(server.data)
    assert len(rows) == len(PEOPLE)  # one face per photo, none lost, none doubled
    assert len({r.split(",")[1] for r in rows}) == len(PEOPLE)


def test_spool_is_bounded_and_survives_the_agent(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir()
    for i in range(4):
        shutil.copy(lfw_photo("Colin_Powell", i + 1), folder / f"{i}.jpg")
    frames = list(folder_snapshots(folder, "cam1"))
    spool = Spool(tmp_path / "spool", max_bytes=10 * 1024 * 1024)
    stop = threading.Event()
    first = spool.put(frames[:2], stop)
    spool.put(frames[2:], stop)
    # a second agent on the same spool would send the first one's batches: refused
    with pytest.raises(SpoolBusy, match="own --spool"):
        Spool(tmp_path / "spool", max_bytes=10 * 1024 * 1024)
    spool.close()
    # a new agent process sees the batches in order, complete
    reopened = Spool(tmp_path / "spool", max_bytes=10 * 1024 * 1024)
    assert reopened.pending()[0] == first
    assert len(reopened.pending()) == 2
    assert sorted(p.name for p in first.iterdir()) == ["0.jpg", "1.jpg", "meta.json"]
    reopened.close()
    # a batch halved, and its first half halved again: every part in sending order
    four = Spool(tmp_path / "spool-4", max_bytes=10 * 1024 * 1024)
    whole = four.put(frames, stop)
    four.split(whole)
    four.split(whole)
    parts = four.pending()
    assert [p.name.removeprefix(whole.name) for p in parts] == ["", "-1-2", "-2"]
    sent = [json.loads((p / "meta.json").read_text()) for p in parts]
    assert [m["image_id"] for batch in sent for m in batch] == [f.image_id for f in frames]
    four.close()
    # over the bound, put waits (here: gives up because stop is set) instead of dropping
    tight = Spool(tmp_path / "spool", max_bytes=1)
    stop.set()
    tight.put(frames[:1], stop)
    assert len(tight.pending()) == 3  # nothing was dropped to make room


def test_agent_unreachable_server_keeps_everything(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool", max_backoff=0.2)
    stats = agent.run(folder_snapshots(folder, "cam1"), drain_timeout=1.0)
    agent.close()
    assert stats.batches_sent == 0 and stats.send_failures >= 1
    assert len(Spool(tmp_path / "spool", 10**9).pending()) == 1


def test_a_folder_run_says_what_it_did_not_send(tmp_path: Path) -> None:
    """Files the folder scan does not send are said in the summary, counted: images in a
    format the server does not take (named one by one above it; the exit code says
    something was refused), and files not named as images, left alone."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    folder = tmp_path / "snaps"
    folder.mkdir()
    (folder / "a.tif").write_bytes(lfw_still("Colin_Powell", 1, "TIFF"))
    (folder / "b.avif").write_bytes(lfw_still("Colin_Powell", 1, "AVIF"))
    (folder / "c.gif").write_bytes(lfw_still("Colin_Powell", 1, "GIF"))
    (folder / "readme.txt").write_text("uploads from cam1")
    past = time.time() - 60  # written a while ago: no wait for them to settle
    for p in folder.iterdir():
        os.utime(p, (past, past))
    r = CliRunner().invoke(app, [
        "agent", "--server", f"http://127.0.0.1:{free_port()}", "--key", "k", "--camera",
        "cam1", "--folder", str(folder), "--spool", str(tmp_path / "sp"),
        "--drain-timeout", "0"])
    assert r.exit_code == 3, r.output
    assert r.output.startswith("1 snapshots, 0 batches sent")  # the TIFF, spooled
    assert (f"{folder}: 2 image file(s) not sent, in a format the server does not take "
            "(accepted: JPEG, PNG, WebP, BMP, TIFF; named above), 1 file(s) not named as "
            "images left alone (readme.txt)") in r.output


def test_agent_keeps_batches_the_server_refuses_it_and_splits_large_ones(
        setup, tmp_path: Path) -> None:
    server, cam_key, _, folder = setup
    # a permanently refused snapshot: a JPEG by its first bytes (the agent sends it), cut
    (folder / "999.jpg").write_bytes(b"\xff\xd8\xff not an image")
    os.utime(folder / "999.jpg", (1_704_448_800 + 3600,) * 2)
    server.start(REVISIT_SERVICE_MAX_BATCH_FRAMES="2")
    # a wrong key: every batch would be refused alike, so none is given up
    wrong = Agent(server.url, "rvk_wrong", tmp_path / "spool-wrong", batch_size=5)
    stats = wrong.run(folder_snapshots(folder, "cam1"), drain_timeout=30.0)
    wrong.close()
    assert wrong.refused and wrong.refused.startswith("401")
    assert stats.batches_sent == 0 and stats.batches_rejected == 0
    kept = Spool(tmp_path / "spool-wrong", 10**9).pending()
    assert sum(len(list(p.glob("*.jpg"))) for p in kept) == stats.sampled
    # the right key, batches of 5 where the server takes 2: split until they fit
    agent = Agent(server.url, cam_key, tmp_path / "spool", batch_size=5)
    stats = agent.run(folder_snapshots(folder, "cam1"), drain_timeout=120.0)
    agent.close()
    assert agent.refused is None and agent.spool.pending() == []
    assert stats.batches_rejected == 1  # the broken file alone (its batch was halved)
    (rejected,) = agent.spool.rejected_dir.iterdir()
    assert "422" in (rejected / "rejected.txt").read_text()
    assert not list(rejected.glob("*.jpg"))  # the reason and metadata stay, no image
    server.stop()
    assert len(_sightings(server.data)) == len(PEOPLE)  # every good snapshot arrived


def test_a_snapshot_refused_inside_an_accepted_batch_is_reported(setup, tmp_path: Path) -> None:
    """The server takes the batch (202) but refuses one snapshot in it (its time is before
    2000): the agent names it, counts it and keeps its metadata, instead of dropping it."""
    server, cam_key, _, folder = setup
    old = folder / "000.jpg"
    os.utime(old, (946_000_000,) * 2)  # 1999-12-24
    server.start()
    agent = Agent(server.url, cam_key, tmp_path / "spool", batch_size=10)
    stats = agent.run(folder_snapshots(folder, "cam1"), drain_timeout=120.0)
    agent.close()
    assert (stats.batches_sent, stats.snapshots_rejected) == (1, 1)
    (note,) = agent.spool.rejected_dir.glob("*-snapshots.json")
    (refused,) = json.loads(note.read_text())
    assert refused["ts"].startswith("1999-12-") and "2000" in refused["reason"]


def test_the_agent_cli_refuses_what_it_would_get_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from revisit.cli.main import app

    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    run = CliRunner().invoke
    base = ["agent", "--key", "k", "--camera", "cam1", "--spool", str(tmp_path / "sp")]
    r = run(app, [*base, "--server", "127.0.0.1:8080", "--folder", str(folder)])
    assert r.exit_code == 2 and "server's URL" in r.output
    r = run(app, [*base, "--server", "http://127.0.0.1:9", "--folder", str(folder),
                  "--every", "1s"])
    assert r.exit_code == 2 and "--every" in r.output and "not used" in r.output
    video = tmp_path / "v.avi"
    video.write_bytes(b"")
    r = run(app, [*base, "--server", "http://127.0.0.1:9", "--video", str(video),
                  "--start", "1995-01-05T09:00:00Z"])
    assert r.exit_code == 2 and "2000" in r.output
    r = run(app, [*base, "--server", "http://127.0.0.1:9", "--video", "rtsp://cam.local/live"])
    assert r.exit_code == 2 and "--rtsp" in r.output and "not found" not in r.output
    held = Spool(tmp_path / "sp", 10**6)  # another agent runs on this spool
    try:
        r = run(app, [*base, "--server", "http://127.0.0.1:9", "--folder", str(folder)])
        assert r.exit_code == 2 and "own --spool" in r.output
    finally:
        held.close()


def test_a_folder_run_again_sends_only_new_files(setup, tmp_path: Path) -> None:
    """A drop folder the agent runs over again (cron): files an earlier run spooled are not
    read or sent again; a new file, or one replaced under its name, is."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    server, cam_key, _, folder = setup
    server.start()
    cmd = ["agent", "--server", server.url, "--key", cam_key, "--camera", "cam1",
           "--folder", str(folder), "--spool", str(tmp_path / "sp")]

    def run(*extra: str) -> str:
        r = CliRunner().invoke(app, [*cmd, *extra])
        assert r.exit_code == 0, r.output
        return r.output

    assert run().startswith(f"{len(PEOPLE)} snapshots")
    again = run()
    assert f"{len(PEOPLE)} file(s) of {folder} spooled by an earlier run" in again
    assert "0 snapshots, 0 batches sent" in again
    # a camera set to TIFF: sent, and counted like the others (it was refused here once)
    (folder / "100.tif").write_bytes(lfw_still("Hugo_Chavez", 3, "TIFF"))
    os.utime(folder / "100.tif", (1_704_448_800 + 3600,) * 2)
    assert "1 snapshots, 1 batches sent" in run()
    assert run("--resend").startswith(f"{len(PEOPLE) + 1} snapshots")
    server.stop()
    assert len(_sightings(server.data)) == len(PEOPLE) + 1



def test_a_watched_folder_sends_files_as_they_arrive(setup, tmp_path: Path) -> None:
    """`--watch`: the agent keeps running over a folder cameras write to; files arriving
    later are sent in the next pass (without waiting for a full batch); SIGTERM stops it
    with the summary."""
    server, cam_key, analyst, folder = setup
    server.start()
    drop = tmp_path / "drop"
    drop.mkdir()
    files = sorted(folder.iterdir())[:3]

    def arrive(src: Path) -> None:
        shutil.copy(src, drop / src.name)
        stamp = time.time() - 60  # finished writing a while ago
        os.utime(drop / src.name, (stamp, stamp))

    def processed() -> int:
        r = httpx.get(server.url + "/v1/batches", params={"status": "done"},
                      headers={"Authorization": f"Bearer {analyst}"}, timeout=10)
        return sum(b["processed"] for b in r.json()["batches"])

    arrive(files[0])
    agent = subprocess.Popen(
        [sys.executable, "-m", "revisit.cli", "agent", "--server", server.url, "--key", cam_key,
         "--camera", "cam1", "--folder", str(drop), "--spool", str(tmp_path / "sp"),
         "--watch", "1s", "--batch", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for src in files[1:]:
            time.sleep(1.5)
            arrive(src)
        deadline = time.monotonic() + 90
        while processed() < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processed() == 3
    finally:
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, out
    assert "3 snapshots" in out


def test_an_agent_killed_while_clearing_a_sent_batch_is_not_wedged(
        setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the server's 202, while deleting the batch (meta.json gone, images
    not yet): the next run must not find half a batch and retry it for ever."""
    import revisit.ingest.agent as agent_mod

    server, cam_key, _, folder = setup
    server.start()
    agent = Agent(server.url, cam_key, tmp_path / "spool", batch_size=len(PEOPLE))
    agent.spool_frames(folder_snapshots(folder, "cam1"))

    class Killed(BaseException):
        pass

    def killed_mid_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        (Path(path) / "meta.json").unlink()  # rmtree's first victim, then SIGKILL
        raise Killed

    monkeypatch.setattr(agent_mod.shutil, "rmtree", killed_mid_rmtree)
    with pytest.raises(Killed):
        agent.drain()
    agent.close()
    monkeypatch.undo()
    again = Agent(server.url, cam_key, tmp_path / "spool", max_backoff=0.5)
    assert again.drain(until_empty_within=5.0)  # nothing half-deleted left to send
    again.close()
    server.stop()
    assert len(_sightings(server.data)) == len(PEOPLE)  # sent once, counted once


def test_a_refusal_interrupted_while_set_aside_does_not_wedge_the_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed while setting a refused batch aside (its images partly deleted): the next
    run must not find a batch whose images are missing and retry it for ever."""
    spool = Spool(tmp_path / "spool", 10**9)
    folder = tmp_path / "snaps"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(lfw_photo("Colin_Powell", 1), folder / name)
    batch = spool.put(list(folder_snapshots(folder, "cam1")), threading.Event())

    class Killed(BaseException):
        pass

    real_unlink = Path.unlink

    def killed_after_one(self: Path, *args: object, **kwargs: object) -> None:
        real_unlink(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(Path, "unlink", killed_after_one)
    with pytest.raises(Killed):
        spool.reject(batch, "422: a bad snapshot")
    monkeypatch.undo()
    spool.close()
    again = Spool(tmp_path / "spool", 10**9)
    for left in again.pending():  # what is still pending can be sent whole
        meta = json.loads((left / "meta.json").read_text())
        assert all((left / m["file"]).is_file() for m in meta)
    assert not list(again.rejected_dir.glob("*/*.jpg"))  # no face image kept aside
    again.close()


def test_a_folder_run_does_not_send_a_file_still_being_written(tmp_path: Path) -> None:
    """A one-pass (cron) run over a folder a camera is uploading to: a file written to
    right now is read once it is complete, not spooled half-written (whose id the
    complete file would then share, so the server would take it for a duplicate)."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    folder = tmp_path / "snaps"
    folder.mkdir()
    done_bytes = lfw_photo("Colin_Powell", 1).read_bytes()
    (folder / "a.jpg").write_bytes(done_bytes)
    os.utime(folder / "a.jpg", (1_704_448_800,) * 2)
    whole = lfw_photo("Hugo_Chavez", 1).read_bytes()
    (folder / "b.jpg").write_bytes(whole[:1000])  # the camera is still writing it

    def finish() -> None:
        time.sleep(1.0)
        with open(folder / "b.jpg", "ab") as fh:
            fh.write(whole[1000:])

    writer = threading.Thread(target=finish)
    writer.start()
    r = CliRunner().invoke(app, [
        "agent", "--server", f"http://127.0.0.1:{free_port()}", "--key", "k",
        "--camera", "cam1", "--folder", str(folder), "--spool", str(tmp_path / "sp"),
        "--batch", "1", "--drain-timeout", "0.5"])
    writer.join()
    assert r.exit_code == 3, r.output  # the server is away: both stay spooled
    spool = Spool(tmp_path / "sp", 10**9)
    sent = sorted(f.read_bytes() for p in spool.pending() for f in p.glob("*.jpg"))
    spool.close()
    assert sent == sorted([done_bytes, whole])


def test_the_backoff_grows_while_sampling_goes_on(tmp_path: Path) -> None:
    """While a stream is sampled and the server is away, tries must space out (0.5, 1,
    2, 4 s, ...), not come every second because the sender wakes every second."""
    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool", batch_size=1)
    tries: list[int] = []

    def stream() -> Iterator[Frame]:
        yield from folder_snapshots(folder, "cam1")
        time.sleep(6.5)  # sampling goes on, nothing new
        tries.append(agent.stats.send_failures)

    agent.run(stream(), drain_timeout=0.0)
    agent.close()
    assert 3 <= tries[0] <= 5, tries  # at 0, 0.5, 1.5, 3.5 s: not seven (one a second)


def test_a_wrong_server_url_keeps_every_batch(setup, tmp_path: Path) -> None:
    """A server URL that does not lead to the batch API (a wrong path behind a proxy:
    404) refuses the agent's setup, not the snapshots: nothing is set aside or deleted."""
    server, cam_key, _, folder = setup
    server.start()
    agent = Agent(server.url + "/revisit", cam_key, tmp_path / "spool", batch_size=3)
    stats = agent.run(folder_snapshots(folder, "cam1"), drain_timeout=10.0)
    agent.close()
    assert agent.refused and agent.refused.startswith("404")
    assert stats.batches_rejected == 0
    kept = Spool(tmp_path / "spool", 10**9).pending()
    assert sum(len(list(p.glob("*.jpg"))) for p in kept) == len(PEOPLE)


def test_a_spool_that_cannot_be_written_is_said_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unusable --spool, or a disk that fills up while spooling: one line naming the
    spool and the cause, exit code 2, no traceback."""
    import errno

    from typer.testing import CliRunner

    from revisit.cli.main import app

    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    (tmp_path / "file").write_text("")
    cmd = ["agent", "--server", f"http://127.0.0.1:{free_port()}", "--key", "k",
           "--camera", "cam1", "--folder", str(folder), "--drain-timeout", "0"]
    r = CliRunner().invoke(app, [*cmd, "--spool", str(tmp_path / "file" / "sp")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "cannot use the spool" in r.output and str(tmp_path / "file" / "sp") in r.output

    def full(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Spool, "put", full)
    r = CliRunner().invoke(app, [*cmd, "--spool", str(tmp_path / "sp")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "cannot write the spool" in r.output and "No space left" in r.output


def _disk_events(monkeypatch: pytest.MonkeyPatch,
                 with_source: bool = False) -> list[tuple[str, str]]:
    """Every fsync (the path synced) and rename (its target, or "source<TAB>target") from
    now on, in order: what a power cut could find on disk is decided by that order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", f"{src}\t{dst}" if with_source else str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_batch_is_on_disk_before_its_files_are_noted_as_spooled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut must not lose a batch whose folder files the ledger already calls
    spooled (the next run would skip them): every file of the batch, its directory and
    its rename into the spool are fsynced before the ledger is written; a split batch's
    second half is on disk before the first half stops listing it."""
    folder = tmp_path / "snaps"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(lfw_photo("Colin_Powell", 1), folder / name)
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool", batch_size=2)
    agent.remember_files_of = "cam1"
    events = _disk_events(monkeypatch, with_source=True)

    def synced_before_rename(dst: str) -> tuple[int, set[str]]:
        """Where the rename to ``dst`` happened, and what was fsynced before it."""
        at = next(i for i, e in enumerate(events)
                  if e[0] == "replace" and e[1].endswith(f"\t{dst}"))
        return at, {e[1].removeprefix(events[at][1].split("\t")[0])
                    for e in events[:at] if e[0] == "fsync"}

    agent.spool_frames(folder_snapshots(folder, "cam1"))
    (batch,) = agent.spool.pending()
    root = str(agent.spool.root)
    ledger = next(i for i, e in enumerate(events) if "/.spooled-" in e[1])
    rename, synced = synced_before_rename(str(batch))
    assert {"/0.jpg", "/1.jpg", "/meta.json", ""} <= synced  # images, meta, their folder
    assert ("fsync", root) in events[rename:ledger]  # the rename itself, then the ledger
    events.clear()
    agent.spool.split(batch)
    (_, half) = agent.spool.pending()
    moved, synced = synced_before_rename(str(half))
    assert {"/1.jpg", "/meta.json", ""} <= synced
    shrink, _ = synced_before_rename(f"{batch}/meta.json")
    assert ("fsync", root) in events[moved:shrink]
    agent.close()


def test_the_spool_size_is_kept_without_rescanning_the_backlog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound check runs on every write: its cost must not grow with the batches
    spooled (a camera offline for a day spools thousands), and the size it keeps must
    match the disk after batches are sent, set aside, split, and after a restart."""
    folder = tmp_path / "snaps"
    folder.mkdir()
    for i in range(4):
        shutil.copy(lfw_photo("Colin_Powell", i + 1), folder / f"{i}.jpg")
    frames = list(folder_snapshots(folder, "cam1"))
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    stop = threading.Event()

    def on_disk() -> int:
        return sum(f.stat().st_size for p in spool.pending() for f in p.iterdir())

    batches = [spool.put(frames, stop) for _ in range(4)]
    assert spool.size() == on_disk() > 0
    spool.done(batches[0])
    spool.reject(batches[1], "422: a bad snapshot")
    spool.split(batches[2])
    assert spool.size() == on_disk()
    spool.close()
    spool = Spool(tmp_path / "spool", max_bytes=10**9)
    assert spool.size() == on_disk()

    looks = {"listings": 0, "stats": 0}
    real_scandir, real_iterdir, real_stat = os.scandir, Path.iterdir, Path.stat

    def scandir(*args: object) -> object:
        looks["listings"] += 1
        return real_scandir(*args)

    def iterdir(self: Path) -> object:
        looks["listings"] += 1
        return real_iterdir(self)

    def stat(self: Path, **kwargs: object) -> os.stat_result:
        looks["stats"] += 1
        return real_stat(self, **kwargs)

    def one_write() -> dict[str, int]:
        looks.update(listings=0, stats=0)
        with monkeypatch.context() as m:
            m.setattr(os, "scandir", scandir)
            m.setattr(Path, "iterdir", iterdir)
            m.setattr(Path, "stat", stat)
            spool.put(frames[:1], stop)
        return dict(looks)

    few = one_write()
    for _ in range(20):
        spool.put(frames[:1], stop)
    assert one_write() == few  # twenty batches more: not one more listing or stat
    assert spool.size() == on_disk()
    spool.close()


def test_a_video_run_stopped_by_sigterm_says_what_it_did(tmp_path: Path) -> None:
    """SIGTERM (a service stopped) ends a video or stream run with the summary a normal
    end prints, keeping what is spooled: the operator sees what was sampled and left."""
    import cv2
    import numpy as np

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(8):  # 4 s of video, a snapshot a second
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    spool = tmp_path / "sp"
    agent = subprocess.Popen(
        [sys.executable, "-m", "revisit.cli", "agent", "--server",
         f"http://127.0.0.1:{free_port()}", "--key", "k", "--camera", "cam1",
         "--video", str(video), "--every", "1s", "--start", "2024-01-05T09:00:00Z",
         "--batch", "1", "--spool", str(spool)],  # no server: retried for 600 s
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(spool.glob("0*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # sending, failing, backing off
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert agent.returncode == 3, err  # batches still spooled, as at a normal end
    assert out.startswith("4 snapshots, 0 batches sent"), err
    assert "4 batches still spooled" in out
    assert len(Spool(spool, 10**9).pending()) == 4



def test_a_stopped_agent_sends_no_more_within_a_drain_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during the final drain (its deadline up to --drain-timeout away) must end
    it after the batch in flight, not after sending a whole backlog to a healthy server."""
    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool")
    agent.spool_frames(folder_snapshots(folder, "cam1"))
    sent: list[Path] = []
    monkeypatch.setattr(agent, "send_one", lambda batch: sent.append(batch) or [])
    agent.stop.set()
    assert not agent.drain(until_empty_within=600.0)
    assert sent == [] and len(agent.spool.pending()) == 1
    agent.close()


@pytest.mark.parametrize("err", [errno.EXDEV, errno.EACCES])
def test_a_refused_batch_that_cannot_be_moved_aside_does_not_stop_the_sender(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        err: int) -> None:
    """``<spool>-rejected/`` on another filesystem (the spool a mount point) is set aside
    by a copy, the batch leaving the spool whole; any other failure to set it aside is one
    line, the batch stays spooled for the next run, and the later batches are still sent."""
    from revisit.ingest.agent import PermanentRejection

    folder = tmp_path / "snaps"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(lfw_photo("Colin_Powell", 1), folder / name)
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool", batch_size=1)
    agent.spool_frames(folder_snapshots(folder, "cam1"))
    refused, later = agent.spool.pending()
    sent: list[str] = []

    def send_one(batch: Path) -> list[dict[str, str]]:
        if batch == refused:
            raise PermanentRejection("400: no")
        sent.append(batch.name)
        return []

    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if Path(str(dst)).parent == agent.spool.rejected_dir and Path(str(src)) == refused:
            raise OSError(err, os.strerror(err))
        real_replace(src, dst)

    monkeypatch.setattr(agent, "send_one", send_one)
    monkeypatch.setattr(os, "replace", replace)
    assert agent.drain(until_empty_within=5.0)
    assert sent == [later.name]
    aside = agent.spool.rejected_dir / refused.name
    if err == errno.EXDEV:
        assert agent.spool.pending() == [] and agent.stats.batches_rejected == 1
        assert sorted(p.name for p in aside.iterdir()) == ["meta.json", "rejected.txt"]
        assert (aside / "rejected.txt").read_text() == "400: no"
        assert agent.spool.size() == 0
    else:
        assert agent.spool.pending() == [refused] and agent.stats.batches_rejected == 0
        assert not aside.exists() and sorted(p.name for p in refused.iterdir()) == [
            "0.jpg", "meta.json"]
        (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"
                   and "cannot set" in r.getMessage()]
        assert refused.name in line and "Permission denied" in line and "\n" not in line
    agent.close()


def test_refusal_records_and_a_new_ledger_are_on_disk_before_they_are_relied_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut must not lose the reason a batch was set aside (its batch has left the
    spool), the snapshots refused inside a sent batch (deleted next), nor a new ledger
    (the folder would be sent again): each file and its directory entry are fsynced."""
    folder = tmp_path / "snaps"
    folder.mkdir()
    shutil.copy(lfw_photo("Colin_Powell", 1), folder / "a.jpg")
    spool = Spool(tmp_path / "spool", 10**9)
    frames = list(folder_snapshots(folder, "cam1"))
    refused, sent = spool.put(frames, threading.Event()), spool.put(frames, threading.Event())
    events = _disk_events(monkeypatch)

    def at(event: tuple[str, str]) -> int:
        return events.index(event)

    root, aside = str(spool.root), spool.rejected_dir
    spool.note_spooled("cam1", ["a.jpg\t1\t2"])
    assert at(("fsync", str(spool._ledger("cam1")))) < at(("fsync", root))
    events.clear()
    spool.reject(refused, "400: no")
    moved = at(("replace", str(aside / refused.name)))
    assert at(("fsync", str(aside.parent))) < moved  # the new <spool>-rejected/ entry
    assert at(("fsync", f"{refused}/rejected.txt")) < moved < at(("fsync", str(aside)))
    events.clear()
    spool.note_rejected(sent, [{"file": "0.jpg", "reason": "a duplicate"}])
    record = aside / f"{sent.name}-snapshots.json"
    assert at(("fsync", f"{record}.tmp")) < at(("replace", str(record))) < at(
        ("fsync", str(aside)))
    assert json.loads(record.read_text())[0]["reason"] == "a duplicate"
    spool.close()


def test_an_agent_stopped_by_ctrl_c_says_what_it_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C stops at once (exit code 130) with the summary a normal end prints: the
    operator stopping the agent by hand sees what was sampled and what is still spooled."""
    from typer.testing import CliRunner

    import revisit.ingest.agent as agent_mod
    from revisit.cli.main import app

    folder = tmp_path / "snaps"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(lfw_photo("Colin_Powell", 1), folder / name)

    def then_ctrl_c(folder: Path, camera: str, **kwargs: object) -> Iterator[Frame]:
        yield from folder_snapshots(folder, camera)
        raise KeyboardInterrupt

    monkeypatch.setattr(agent_mod, "settled_folder", then_ctrl_c)
    r = CliRunner().invoke(app, [
        "agent", "--server", f"http://127.0.0.1:{free_port()}", "--key", "k", "--camera",
        "cam1", "--folder", str(folder), "--batch", "1", "--spool", str(tmp_path / "sp")])
    assert r.exit_code == 130, r.output
    assert "interrupted: undelivered batches stay in the spool" in r.output
    assert "2 snapshots, 0 batches sent" in r.output and "2 batches still spooled" in r.output
    assert len(Spool(tmp_path / "sp", 10**9).pending()) == 2


def test_refused_batches_kept_in_a_full_spool_do_not_stall_sampling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused batch that cannot be set aside stays spooled but is not sent again: it
    must not count as a batch the sampler waits on to leave a full spool (every batch of
    a misconfigured camera refused, ``<spool>-rejected/`` not writable), or the run never
    ends."""
    from revisit.ingest.agent import PermanentRejection

    folder = tmp_path / "snaps"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(lfw_photo("Colin_Powell", 1), folder / name)
    size = (folder / "a.jpg").stat().st_size
    agent = Agent(f"http://127.0.0.1:{free_port()}", "k", tmp_path / "spool", batch_size=1,
                  max_spool_bytes=size + size // 2, jpeg_quality=100)

    def send_one(batch: Path) -> list[dict[str, str]]:
        raise PermanentRejection("422: camera 'cam1' is not registered")

    def replace(src: object, dst: object, real=os.replace) -> None:
        if Path(str(dst)).parent == agent.spool.rejected_dir:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        real(src, dst)

    monkeypatch.setattr(agent, "send_one", send_one)
    monkeypatch.setattr(os, "replace", replace)
    done = threading.Event()
    runner = threading.Thread(target=lambda: (agent.run(folder_snapshots(folder, "cam1"),
                                                        drain_timeout=5.0), done.set()),
                              daemon=True)
    runner.start()
    finished = done.wait(20.0)
    agent.stop.set()  # let a stalled run end
    runner.join(5.0)
    assert finished, "sampling waited for ever on batches the sender will not send"
    assert len(agent.spool.pending()) == 3 and agent.stats.batches_rejected == 0
    agent.close()
