"""Manifest input: one JSON object per snapshot, one snapshot per line.

``{"image": "cam1/0001.jpg", "camera_id": "c1", "location_id": "101",
"ts": "2024-01-05T09:00:00+01:00", "image_id": "optional", "tenant": "optional"}``

A bad line does not stop the run: it becomes a :class:`Rejected` naming file and line,
and the rest goes on.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from revisit.ingest.timestamps import TimestampError, TimeWindow, parse_ts
from revisit.records import (
    DEFAULT_TENANT,
    ID_RULE,
    Frame,
    Rejected,
    content_id,
    encodes,
    valid_id,
)

REQUIRED = ("image", "camera_id", "location_id", "ts")


class ManifestError(ValueError):
    """One manifest line that cannot become a frame."""


# The HTTP API's rule for the ids of a frame (revisit.api.batches): printable text a
# database and UTF-8 can hold, so a NUL or an escape cannot reach a batch or a row.
MAX_ID_CHARS = 200
_IDS = ("camera_id", "location_id", "image_id", "tenant")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ManifestError(f"field {key!r} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise ManifestError(f"field {key!r} is empty")
    # ids: printable text; the image path and ts: no control character at least
    if not encodes(text) or _CONTROL.search(text) or (key in _IDS and not text.isprintable()):
        raise ManifestError(f"field {key!r} holds a control or unprintable character "
                            f"({ascii(text)[:80]}): only printable text is accepted")
    if key in _IDS and len(text) > MAX_ID_CHARS:
        raise ManifestError(f"field {key!r} is longer than {MAX_ID_CHARS} characters")
    return text


def _name(obj: dict, key: str) -> str:
    """A tenant, location or camera id: the rule they follow everywhere they are named
    (a report filter, a CSV cell and a URL path carry them as they are)."""
    text = _text(obj, key)
    if not valid_id(text):
        raise ManifestError(f"field {key!r} is not a valid id ({ascii(text)[:80]}): {ID_RULE}")
    return text


# what a manifest line may make the reader hold in memory (ingest.max_image_bytes)
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def parse_line(line: str, base: Path, window: TimeWindow | None = None,
               max_bytes: int = MAX_IMAGE_BYTES) -> Frame:
    """Turn one manifest line into a frame carrying the image bytes (read, not decoded);
    a path that is no regular file (a folder, a device, a pipe) or a file over
    ``max_bytes`` is refused before anything is read."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ManifestError("not a JSON object")
    missing = [k for k in REQUIRED if k not in obj or obj[k] in (None, "")]
    if missing:
        raise ManifestError("missing field(s): " + ", ".join(missing))
    image = _text(obj, "image")
    camera = _name(obj, "camera_id")
    location = _name(obj, "location_id")
    try:
        ts = parse_ts(_text(obj, "ts"))
        if window is not None:
            window.check(ts)
    except TimestampError as exc:
        raise ManifestError(str(exc)) from None
    tenant = _name(obj, "tenant") if obj.get("tenant") not in (None, "") else DEFAULT_TENANT
    path = (base / image).resolve()
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"image {image} is not a regular file")
        if st.st_size > max_bytes:
            raise ManifestError(f"image {image} is {st.st_size} bytes; at most {max_bytes} "
                                "(ingest.max_image_bytes)")
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read image {image}: {exc.strerror or exc}") from None
    image_id = _text(obj, "image_id") if obj.get("image_id") not in (None, "") else content_id(data)
    return Frame(
        tenant=tenant, camera_id=camera, location_id=location, image_id=image_id, ts=ts,
        data=data, source=str(path),
    )


def check_manifest(path: Path) -> None:
    """Refuse a file that is not a text manifest (an image or video passed by mistake)
    before anything is ingested."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4 KB mark
            raise ManifestError(f"{path} is not a text manifest (JSON lines); to ingest a "
                                "video use `revisit ingest-video`") from None
        text = head[:exc.start].decode("utf-8")
    if "\x00" in text or (text.strip() and not text.lstrip().startswith("{")):
        raise ManifestError(f"{path} is not a manifest: expected one JSON object per line "
                            '({"image": ..., "camera_id": ..., "location_id": ..., "ts": ...})')


def read_manifest(path: Path, window: TimeWindow | None = None,
                  max_bytes: int = MAX_IMAGE_BYTES) -> Iterator[Frame | Rejected]:
    """Frames in file order; bad lines come out as Rejected with ``file:line`` and reason
    (a timestamp outside ``window`` too, an image file over ``max_bytes``)."""
    base = path.parent
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield Rejected(source=where, reason="line is not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                frame = parse_line(line, base, window, max_bytes)
            except ManifestError as exc:
                yield Rejected(source=where, reason=str(exc))
                continue
            frame.source = f"{where} ({frame.source})"
            yield frame
