"""``revisit agent``: the on-site camera agent (sample, batch, spool, send)."""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from revisit.records import Frame
from revisit.report.durations import parse_duration


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(
        server: Annotated[str, typer.Option(help="revisit server, e.g. http://10.0.0.5:8080")],
        key: Annotated[str, typer.Option(envvar="REVISIT_AGENT_KEY", help="Camera API key.")],
        camera: Annotated[str, typer.Option(help="Camera id (the key must allow it).")],
        rtsp: Annotated[str | None, typer.Option(help="RTSP stream URL.")] = None,
        video: Annotated[Path | None, typer.Option(help="Video file.")] = None,
        folder: Annotated[Path | None, typer.Option(help="Folder of snapshot images.")] = None,
        time_from: Annotated[str, typer.Option(
            "--time-from", help="--folder: a snapshot's time from the file's modification "
            "time (mtime), the EXIF DateTimeOriginal its camera wrote (exif), or a timestamp "
            "in its name such as 20240105T093000 (name).")] = "mtime",
        timezone: Annotated[str | None, typer.Option(
            "--timezone", help="--time-from exif|name: the zone of times written without "
            "an offset (IANA name; default: this machine's).")] = None,
        every: Annotated[str | None, typer.Option(
            help="Sampling interval (video/stream; default 5s).")] = None,
        batch: Annotated[int, typer.Option(min=1, max=500, help="Snapshots per batch.")] = 10,
        start: Annotated[str | None, typer.Option(
            help="Time of a video's first frame (ISO 8601 with offset; default: the file's "
            "modification time).")] = None,
        spool: Annotated[
            Path, typer.Option(help="Disk buffer for batches not yet delivered (one per agent).")
        ] = Path("revisit-agent-spool"),
        spool_mb: Annotated[int, typer.Option(min=1, help="Bound of the disk buffer (MB).")] = 512,
        drain_timeout: Annotated[
            float, typer.Option(help="After the input ends, keep retrying this long (s).")
        ] = 600.0,
        watch: Annotated[str | None, typer.Option(
            "--watch", help="--folder: keep running, looking for new files this often "
            "(e.g. 10s), for a folder cameras keep writing to; stop with Ctrl-C or SIGTERM.")
        ] = None,
        resend: Annotated[bool, typer.Option(
            "--resend", help="--folder: send every file again, also those an earlier run "
            "spooled (by default a run sends only new or changed files).")] = False,
    ) -> None:
        """Sample snapshots from a stream, video or folder and post them in camera batches.

        Batches are spooled to disk first and deleted only once the server accepted them,
        so nothing is lost while the server is unreachable or restarting. SIGTERM and Ctrl-C
        stop any run with its summary; what is still spooled is sent by the next run.
        """
        from datetime import datetime
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from revisit.config import Settings
        from revisit.image_formats import ACCEPTED
        from revisit.ingest.agent import (
            TIME_SOURCES,
            Agent,
            SpoolBusy,
            SpoolWriteError,
            settled_folder,
            watch_folder,
        )
        from revisit.ingest.timestamps import parse_ts
        from revisit.ingest.video import VideoError, not_a_video_file, sample_video

        logging.getLogger("revisit.ingest.agent").setLevel(logging.INFO)
        sources = [s for s in (rtsp, video, folder) if s]
        if len(sources) != 1:
            raise typer.BadParameter("give exactly one of --rtsp, --video, --folder")
        if not server.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{server!r}: give the server's URL, e.g. "
                                     "http://10.0.0.5:8080", param_hint="--server")
        # an option the chosen input does not use is a mistake, not something to ignore
        unused = [name for name, given, used in (
            ("--every", every is not None, folder is None),
            ("--start", start is not None, video is not None),
            ("--time-from", time_from != "mtime", folder is not None),
            ("--timezone", timezone is not None, folder is not None and time_from != "mtime"),
            ("--resend", resend, folder is not None),
            ("--watch", watch is not None, folder is not None),
        ) if given and not used]
        if unused:
            raise typer.BadParameter(f"{', '.join(unused)}: not used with this input (--every: "
                                     "video and stream; --start: video; --time-from: folder; "
                                     "--timezone: --time-from exif or name)")
        try:
            step = parse_duration(every or "5s")
            origin = parse_ts(start) if start else None
            poll = parse_duration(watch) if watch else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if poll is not None and not 0.5 <= poll.total_seconds() <= 86_400:
            raise typer.BadParameter(f"{watch}: between 0.5s and 1d", param_hint="--watch")
        if step.total_seconds() <= 0:
            raise typer.BadParameter(f"--every {every}: the interval must be more than 0 s")
        if video is not None:
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", str(video)):  # a URL, made a path
                raise typer.BadParameter(
                    f"{video} is a stream's URL, not a video file: give it as --rtsp URL",
                    param_hint="--video")
            if why := not_a_video_file(str(video)):
                raise typer.BadParameter(why, param_hint="--video")
            if origin is None:  # a video's frames have a time of their own, not the agent's
                origin = datetime.fromtimestamp(video.stat().st_mtime).astimezone()
                typer.echo(f"no --start given: using the file's time {origin.isoformat()}",
                           err=True)
            if why := Settings().ingest.window().reason(origin):
                raise typer.BadParameter(why, param_hint="--start")
        frames: Iterator[Frame | None]
        if folder is not None:
            if not folder.is_dir():
                raise typer.BadParameter(f"{folder} is not a folder", param_hint="--folder")
            if time_from not in TIME_SOURCES:
                raise typer.BadParameter(f"use one of {', '.join(TIME_SOURCES)}",
                                         param_hint="--time-from")
            try:
                zone = ZoneInfo(timezone) if timezone else None
            except (ZoneInfoNotFoundError, ValueError):
                raise typer.BadParameter(f"unknown time zone {timezone!r}",
                                         param_hint="--timezone") from None
        try:
            worker = Agent(server, key, spool, batch_size=batch,
                           max_spool_bytes=spool_mb * 1024 * 1024)
        except SpoolBusy as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # not creatable, not writable, on a full disk
            typer.echo(f"error: cannot use the spool {spool}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
        if folder is not None:
            done = set() if resend else worker.spool.spooled_files(camera, folder)
            if done:
                typer.echo(f"{len(done)} file(s) of {folder} spooled by an earlier run: "
                           "sending only new ones (--resend sends all)", err=True)
            worker.remember_files_of = camera
            if poll is not None:
                frames = watch_folder(folder, camera, time_from=time_from, zone=zone,
                                      skip=set(done), every_s=poll.total_seconds(),
                                      stop=worker.stop, stats=worker.stats)
            else:
                frames = settled_folder(folder, camera, time_from=time_from, zone=zone,
                                        skip=done, stats=worker.stats)
        else:
            src = rtsp or str(video)
            frames = sample_video(src, camera_id=camera, location_id="", every=step,
                                  start=origin, stop=worker.stop,
                                  max_pixels=Settings().ingest.max_pixels)
        failed: str | None = None
        interrupted = False
        # SIGTERM (a service stopped) ends sampling and sending; what is spooled stays for
        # the next run, and the summary says what was done
        previous = signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
        try:
            stats = worker.run(frames, drain_timeout=drain_timeout)
        except VideoError as exc:  # what was sampled before was spooled and sent
            failed, stats = str(exc), worker.stats
        except SpoolWriteError as exc:  # a full disk: what was spooled before was sent
            failed, stats = str(exc), worker.stats
        except KeyboardInterrupt:  # Ctrl-C: stop at once, and say what was done
            worker.stop.set()
            interrupted, stats = True, worker.stats
        finally:
            if previous is not None:  # None: a handler not set from Python
                signal.signal(signal.SIGTERM, previous)
            worker.close()
        left = len(worker.spool.pending())
        if interrupted:
            typer.echo("interrupted: undelivered batches stay in the spool", err=True)
        if failed:
            typer.echo(f"error: {failed}", err=True)
        if worker.refused:
            typer.echo(f"error: the server refused this agent ({worker.refused}); the "
                       f"batches stay in {spool} until the key or camera is fixed", err=True)
        typer.echo(
            f"{stats.sampled} snapshots, {stats.batches_sent} batches sent, "
            f"{stats.batches_rejected} rejected, {stats.snapshots_rejected} snapshots refused "
            f"one by one, {stats.send_failures} failed attempts, {left} batches still spooled"
            + (f" (refusals in {worker.spool.rejected_dir})"
               if stats.batches_rejected or stats.snapshots_rejected else "")
        )
        if stats.files_refused or stats.files_ignored:
            names = ", ".join(stats.ignored_names) + (
                ", ..." if stats.files_ignored > len(stats.ignored_names) else "")
            typer.echo(f"{folder}: {stats.files_refused} image file(s) not sent, in a format "
                       f"the server does not take (accepted: {ACCEPTED}; named above), "
                       f"{stats.files_ignored} file(s) not named as images left alone"
                       + (f" ({names})" if names else ""))
        if interrupted:
            raise typer.Exit(130)
        if failed:
            raise typer.Exit(2)
        if left or stats.batches_rejected or stats.snapshots_rejected or stats.files_refused:
            raise typer.Exit(3)
