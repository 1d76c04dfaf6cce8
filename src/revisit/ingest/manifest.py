"""Manifest input: one JSON object per snapshot, one snapshot per line.

``{"image": "cam1/0001.jpg", "camera_id": "c1", "location_id": "101",
"ts": "2024-01-05T09:00:00+01:00", "image_id": "optional", "tenant": "optional"}``

A bad line does not stop the run: it becomes a :class:`Rejected` naming file and line,
and the rest goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from revisit.records import DEFAULT_TENANT, Frame, Rejected, content_id

REQUIRED = ("image", "camera_id", "location_id", "ts")


class ManifestError(ValueError):
    """One manifest line that cannot become a frame."""


def _text(obj: dict, key: str) -> str:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ManifestError(f"field {key!r} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise ManifestError(f"field {key!r} is empty")
    return text


def parse_ts(text: str) -> datetime:
    """ISO 8601 with an explicit offset (``Z`` or ``+01:00``); anything else is an error."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ManifestError(f"ts {text!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise ManifestError(f"ts {text!r} has no UTC offset (add Z or +HH:MM)")
    return ts


def parse_line(line: str, base: Path) -> Frame:
    """Turn one manifest line into a frame carrying the image bytes (read, not decoded)."""
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
    camera = _text(obj, "camera_id")
    location = _text(obj, "location_id")
    ts = parse_ts(_text(obj, "ts"))
    tenant = _text(obj, "tenant") if obj.get("tenant") not in (None, "") else DEFAULT_TENANT
    path = (base / image).resolve()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read image {image}: {exc.strerror or exc}") from None
    image_id = _text(obj, "image_id") if obj.get("image_id") not in (None, "") else content_id(data)
    return Frame(
        tenant=tenant, camera_id=camera, location_id=location, image_id=image_id, ts=ts,
        data=data, source=str(path),
    )


def read_manifest(path: Path) -> Iterator[Frame | Rejected]:
    """Frames in file order; bad lines come out as Rejected with ``file:line`` and reason."""
    base = path.parent
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                frame = parse_line(line, base)
            except ManifestError as exc:
                yield Rejected(source=where, reason=str(exc))
                continue
            frame.source = f"{where} ({frame.source})"
            yield frame
