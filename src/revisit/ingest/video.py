"""Video and RTSP input: one frame every N seconds.

Files are sampled on video time (the container's timestamps), so a 10-minute file gives the
same frames however fast it is read; streams are sampled on wall time. Each frame's
timestamp is ``start + video time`` for files and the wall clock for streams; its image id
is derived from camera and timestamp so re-ingesting the same file is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import cv2

from revisit.image_formats import ACCEPTED_FORMATS, refusal, still_format
from revisit.records import DEFAULT_TENANT, Frame, as_utc

log = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """The video or stream cannot be opened or read."""


def is_stream(source: str) -> bool:
    return source.split("://", 1)[0].lower() in {"rtsp", "rtsps", "rtmp", "http", "https", "udp"}


def frame_image_id(tenant: str, camera_id: str, ts: datetime) -> str:
    """One id per camera and instant, whatever UTC offset the instant is written with (a
    video ingested again with ``--start`` in another zone is the same snapshots)."""
    key = f"{tenant}\x1f{camera_id}\x1f{as_utc(ts).isoformat()}"
    return "I-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def not_a_video_file(source: str) -> str | None:
    """Why ``source`` is neither a stream URL nor a video file, or None. OpenCV would read
    a printf pattern (``frames/%04d.jpg``) as a video of its images, past the still-image
    checks, and a device as a camera: only a regular file is read."""
    if is_stream(source) or os.path.isfile(source):
        return None
    if "%" in source:
        return (f"{source}: not a video file (an image-sequence pattern is not read: send "
                "snapshots with `revisit agent --folder` or `revisit ingest`)")
    if os.path.exists(source):
        return f"{source} is not a regular file"
    return f"video {source} not found"


def too_many_pixels(source: str, width: int, height: int, max_pixels: int | None) -> str | None:
    """Why frames of ``width`` x ``height`` are not decoded (over ``max_pixels``), or None."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return (f"{source}: frames of {width}x{height} = {width * height} pixels; at most "
            f"{max_pixels} (ingest.max_pixels)")


def still_image_refusal(source: str) -> str | None:
    """Why a file is refused as a video when it is a still image (OpenCV would read it as
    a one-frame video, whatever its format and outside the pixel bound snapshots meet), or
    None. A GIF is read as a video: an animation is what it holds."""
    if is_stream(source) or not os.path.isfile(source):  # a device or pipe: not read here
        return None
    try:
        with open(source, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None  # VideoCapture says it cannot open it
    fmt = still_format(head)
    if fmt is None or fmt == "GIF":
        return None
    if fmt in ACCEPTED_FORMATS:
        return (f"{source} is a {fmt} still image, not a video: ingest snapshots with "
                "`revisit ingest` (a manifest) or `revisit agent --folder`")
    return f"{source}: {refusal(head)}"


def sample_video(
    source: str,
    *,
    camera_id: str,
    location_id: str,
    every: timedelta,
    start: datetime | None = None,
    tenant: str = DEFAULT_TENANT,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    max_pixels: int | None = None,
) -> Iterator[Frame]:
    """Yield decoded frames (``pixels`` set, no re-encode) sampled every ``every``, until
    ``stop`` is set (checked at every frame read, not only at the sampled ones: a stream
    sampled once a minute stops within a frame). A video whose frames are larger than
    ``max_pixels`` is refused before its frames are read (by the size its header
    declares) and at any frame decoded larger."""
    if every <= timedelta(0):
        raise ValueError("--every must be positive")
    if (why := not_a_video_file(source) or still_image_refusal(source)) is not None:
        raise VideoError(why)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise VideoError(f"cannot open video {source!r}")
    declared = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
    if (why := too_many_pixels(source, *declared, max_pixels)) is not None:
        cap.release()
        raise VideoError(why)
    stream = is_stream(source)
    origin = start or datetime.now(UTC)
    step_ms = every.total_seconds() * 1000.0
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    announced = 0 if stream else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    next_ms = 0.0
    index = 0
    emitted = 0
    wall0 = time.monotonic()
    try:
        while (max_frames is None or emitted < max_frames) and not (stop and stop.is_set()):
            if not cap.grab():
                if stream:
                    raise VideoError(f"stream {source!r} stopped delivering frames")
                if index < 0.95 * announced:  # what was read is ingested; say what was not
                    log.warning("%s: read %d of the %d frames its header announces (%.1f s "
                                "of %.1f s): the file is truncated or damaged", source, index,
                                announced, index / fps if fps else 0.0,
                                announced / fps if fps else 0.0)
                break
            if stream:
                now_ms = (time.monotonic() - wall0) * 1000.0
            else:
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                # some containers (GIF) report no timestamps: fall back to index / fps
                now_ms = pos if pos > 0 or index == 0 else (index * 1000.0 / fps if fps else 0.0)
            index += 1
            if now_ms + 1e-6 < next_ms:
                continue
            ok, pixels = cap.retrieve()
            if not ok or pixels is None:
                continue
            if (why := too_many_pixels(source, pixels.shape[1], pixels.shape[0],
                                       max_pixels)) is not None:
                raise VideoError(why)
            ts = datetime.now(UTC) if stream else origin + timedelta(milliseconds=now_ms)
            ts = ts.replace(microsecond=(ts.microsecond // 1000) * 1000)
            yield Frame(
                tenant=tenant, camera_id=camera_id, location_id=location_id,
                image_id=frame_image_id(tenant, camera_id, ts), ts=ts, pixels=pixels,
                source=f"{source}@{now_ms / 1000.0:.1f}s",
            )
            emitted += 1
            next_ms = (now_ms // step_ms + 1) * step_ms if not stream else now_ms + step_ms
    finally:
        cap.release()
