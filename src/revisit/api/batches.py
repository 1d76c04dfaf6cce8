"""POST /v1/batches (camera batch upload) and GET /v1/batches/{id} (its status).

Contract (the camera agent is written against it): ``Authorization: Bearer <camera key>``;
multipart form with field ``metadata`` = JSON array, one object per image
``{"file": "<part filename>", "camera_id": "...", "ts": "ISO 8601 with offset",
"image_id": "optional"}`` and the images in repeated field ``images``. 202 answers
``{"batch_id", "frames", "status_url"}`` (plus ``duplicates``).

Every check runs before anything is queued. A batch is accepted or refused as a whole,
except for frames whose timestamp is unusable (malformed, outside the ``ingest`` window, or
older than the tenant's retention, which would not keep them): those are refused one by
one, listed in the 202's ``rejected`` with a reason, and the others go on (a batch where
none is left is a 422).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message

from revisit.api.auth import require, service_of
from revisit.api.errors import errors
from revisit.api.metrics import Metrics
from revisit.api.processing import BrokerUnavailable, QueueFull
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.image_formats import ACCEPTED
from revisit.ingest.status import BatchStatus
from revisit.ingest.timestamps import TimestampError, TimeWindow, parse_ts
from revisit.records import EXPIRED, Frame, content_id, encodes, iso_utc
from revisit.tenancy.db import ApiKey, Camera
from revisit.tenancy.privacy import expired_reason
from revisit.vision.header import ImageError, image_size

T = TypeVar("T")

router = APIRouter(tags=["camera batches"], responses=errors(401, 403, 422))

_UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {
        "type": "object", "required": ["metadata", "images"],
        "properties": {
            "metadata": {
                "type": "string",
                "description": 'JSON array, one object per image: {"file": "<part filename>", '
                '"camera_id": "...", "ts": "ISO 8601 with offset", "image_id": "optional"}',
            },
            "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": f"{ACCEPTED} images; each part's filename is the "
                       "'file' of its metadata entry"},
        },
    },
}}}}


class Refused(BaseModel):
    file: str
    image_id: str
    reason: str


class BatchAccepted(BaseModel):
    batch_id: str
    frames: int
    duplicates: int
    rejected: list[Refused]
    status: Literal["queued", "done"]
    status_url: str


class BatchState(BaseModel):
    batch_id: str
    status: Literal["queued", "processing", "done", "failed"]
    frames: int
    duplicates: int
    processed: int
    faces: int
    sightings: int
    new_visitors: int
    rejected: list[dict[str, str]]
    error: str | None
    received_at: str | None
    finished_at: str | None



class BodyTooLarge(Exception):
    """The body grew past the limit while streaming (no or a false Content-Length)."""


def _limited(request: Request, limit: int) -> Request:
    """The request with a receive channel that stops after ``limit`` body bytes, so a
    chunked upload cannot spool unbounded data to disk before any check runs."""
    receive = request.receive
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return Request(request.scope, capped)


def _fail(status: int, detail: str) -> HTTPException:
    return HTTPException(status, detail)


def _text_ok(value: str) -> bool:
    """Printable and encodable (no lone surrogates, no control characters)."""
    return value.isprintable() and encodes(value)


def _metadata(raw: Any, max_frames: int) -> list[dict[str, Any]]:
    if not isinstance(raw, str):
        raise _fail(422, "field 'metadata' (a JSON array, one object per image) is missing")
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(422, f"field 'metadata' is not JSON: {exc}") from None
    except RecursionError:
        raise _fail(422, "field 'metadata' is nested too deeply (a flat array of objects "
                         "is expected)") from None
    if not isinstance(items, list) or not items:
        raise _fail(422, "field 'metadata' must be a non-empty JSON array")
    if len(items) > max_frames:
        raise _fail(413, f"batch has {len(items)} images; at most {max_frames} per batch")
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise _fail(422, f"metadata[{i}] is not an object")
        for k in ("file", "camera_id", "ts"):
            if k not in it or it[k] is None:
                raise _fail(422, f"metadata[{i}].{k} is missing (a non-empty string)")
            if not isinstance(it[k], str) or not it[k]:
                hint = " (ISO 8601 with offset, e.g. 2024-05-02T08:00:00Z)" if k == "ts" else ""
                raise _fail(422, f"metadata[{i}].{k} must be a non-empty string, not "
                                 f"{json.dumps(it[k])[:40]}{hint}")
        if "image_id" in it and it["image_id"] is not None and (
            not isinstance(it["image_id"], str) or not 0 < len(it["image_id"]) <= 200
        ):
            raise _fail(422, f"metadata[{i}].image_id must be a string of 1-200 characters")
        for k in ("file", "camera_id", "image_id"):
            v = it.get(k)
            if isinstance(v, str) and (len(v) > 200 or not _text_ok(v)):
                raise _fail(422, f"metadata[{i}].{k} must be 1-200 printable characters")
    ids = [it["image_id"] for it in items if it.get("image_id")]
    if len(ids) != len(set(ids)):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise _fail(422, f"image_id {twice[0]!r} names two images of this batch (an image id "
                         "identifies one snapshot)")
    return items


class Gate(Protocol):
    """What the upload's checks need from whoever accepts the batch: the server process
    (:class:`ServiceGate`) or the accept process of ``service.accept_process``
    (:class:`revisit.api.door.Door`)."""

    config: ServiceSettings
    metrics: Metrics
    # lookups and submit are quick enough for the event loop (no store query): called
    # there, not handed to a worker thread and back
    inline: bool

    def window(self) -> TimeWindow: ...

    def full(self) -> bool: ...

    def lookups(self, tenant: str, cameras: list[str]
                ) -> tuple[dict[str, Camera], int | None]: ...

    def submit(self, tenant: str, frames: list[Frame], refused: list[dict[str, str]],
               key_id: str) -> BatchStatus: ...


class ServiceGate:
    """The server process's own gate: its tenancy, retention and batch processor."""

    inline = False

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.config = svc.config
        self.metrics = svc.metrics

    def window(self) -> TimeWindow:
        return self.svc.settings.ingest.window()

    def full(self) -> bool:
        return self.svc.processor.full()

    def lookups(self, tenant: str, cameras: list[str]
                ) -> tuple[dict[str, Camera], int | None]:
        """The batch's registered cameras (one query) and the tenant's retention in days
        (None: snapshots past it are not refused, ``privacy.retention_at_door`` is off)."""
        retention = self.svc.runtime.retention
        days = retention.days(tenant) if retention.enabled else None
        return self.svc.tenancy.cameras_by_id(tenant, cameras), days

    def submit(self, tenant: str, frames: list[Frame], refused: list[dict[str, str]],
               key_id: str) -> BatchStatus:
        return self.svc.processor.submit(tenant, frames, refused, key_id)


async def _call(gate: Gate, fn: Callable[..., T], *args: Any) -> T:
    return fn(*args) if gate.inline else await run_in_threadpool(fn, *args)


def _throttled(gate: Gate) -> JSONResponse:
    gate.metrics.throttled.inc()
    retry = str(gate.config.retry_after_s)
    return JSONResponse({"detail": f"processing queue is full; retry in {retry} s"},
                        status_code=429, headers={"Retry-After": retry})


@router.post("/v1/batches", status_code=202, summary="Upload a camera batch (camera key)",
             openapi_extra=_UPLOAD, response_model=BatchAccepted,
             responses=errors(413, 429, 503))
async def post_batch(request: Request, key: ApiKey = Depends(require("camera"))) -> JSONResponse:
    return await accept(request, key, ServiceGate(service_of(request)))


async def accept(request: Request, key: ApiKey, gate: Gate) -> JSONResponse:
    """Check a camera batch and hand it to ``gate``: 202, or the error that names what is
    wrong (nothing is queued then)."""
    cfg = gate.config
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
        raise _fail(413, f"request body of {length} bytes exceeds {cfg.max_body_bytes}")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise _fail(422, "a camera batch is a multipart/form-data upload (field 'metadata' "
                         "and the 'images' parts); this request is "
                         f"{request.headers.get('content-type') or 'without a content type'}")
    if gate.full():  # shed load at the door: the body is read, not parsed
        try:
            async for _ in _limited(request, cfg.max_body_bytes).stream():
                pass
        except BodyTooLarge:
            raise _fail(413, f"request body exceeds {cfg.max_body_bytes} bytes") from None
        return _throttled(gate)
    try:
        form = await _limited(request, cfg.max_body_bytes).form(
            max_files=cfg.max_batch_frames + 1, max_fields=10, max_part_size=4 * 1024 * 1024)
    except BodyTooLarge:
        raise _fail(413, f"request body exceeds {cfg.max_body_bytes} bytes") from None
    except Exception as exc:  # multipart parser errors: too many files, bad encoding
        if "too many files" in str(exc).lower():
            raise _fail(413, f"batch has more than {cfg.max_batch_frames} images") from None
        raise _fail(422, f"not a valid multipart form: {exc}") from None
    try:
        items = _metadata(form.get("metadata"), cfg.max_batch_frames)
        uploads: dict[str, UploadFile] = {}
        for part in form.getlist("images"):
            if not isinstance(part, UploadFile) or not part.filename:
                raise _fail(422, "every 'images' part must be a file with a filename")
            if part.filename in uploads:
                raise _fail(422, f"two image parts are named {part.filename!r}")
            uploads[part.filename] = part
        if len(uploads) > cfg.max_batch_frames:
            raise _fail(413, f"batch has {len(uploads)} images; at most {cfg.max_batch_frames}")
        named = {it["file"] for it in items}
        if len(named) != len(items):
            raise _fail(422, "two metadata entries name the same file")
        if missing := sorted(named - set(uploads)):
            raise _fail(422, f"no image part for metadata file(s): {', '.join(missing[:5])}")
        if extra := sorted(set(uploads) - named):
            raise _fail(422, f"image part(s) without metadata: {', '.join(extra[:5])}")

        frames: list[Frame] = []
        refused: list[dict[str, str]] = []  # frames refused one by one (their timestamp)
        expired = 0  # of which past the tenant's retention
        window = gate.window()
        for it in items:
            if not key.may_post_for(it["camera_id"]):
                raise _fail(403, f"this key may not post for camera {it['camera_id']!r}")
        # one query for the batch's cameras and the tenant's retention (cached), off the
        # event loop
        cameras, days = await _call(
            gate, gate.lookups, key.tenant, [it["camera_id"] for it in items])
        cutoff = None if days is None else datetime.now(UTC) - timedelta(days=days)
        for i, it in enumerate(items):
            cam = it["camera_id"]
            camera = cameras.get(cam)
            if camera is None:
                raise _fail(422, f"camera {cam!r} is not registered (revisit admin add-camera)")
            try:
                ts = window.check(parse_ts(it["ts"]))
            except TimestampError as exc:
                refused.append({"file": it["file"], "image_id": it.get("image_id") or "",
                                "reason": f"metadata[{i}].{exc}"})
                continue
            if cutoff is not None and days is not None and ts < cutoff:
                expired += 1
                refused.append({"file": it["file"], "image_id": it.get("image_id") or "",
                                "reason": f"metadata[{i}]."
                                          + expired_reason(key.tenant, days, ts)})
                continue
            part = uploads[it["file"]]
            if part.size is not None and part.size > cfg.max_image_bytes:
                raise _fail(413, f"image {it['file']!r} is {part.size} bytes; "
                                 f"at most {cfg.max_image_bytes}")
            data = await part.read(cfg.max_image_bytes + 1)
            if len(data) > cfg.max_image_bytes:
                raise _fail(413, f"image {it['file']!r} exceeds {cfg.max_image_bytes} bytes")
            try:
                fmt, w, h = image_size(data)
            except ImageError as exc:
                raise _fail(422, f"image {it['file']!r}: {exc}") from None
            if w * h > cfg.max_pixels:
                raise _fail(413, f"image {it['file']!r} is {w}x{h} {fmt} = {w * h} pixels; "
                                 f"at most {cfg.max_pixels}")
            frames.append(Frame(
                tenant=key.tenant, camera_id=cam, location_id=camera.location_id,
                image_id=it.get("image_id") or content_id(data), ts=ts, data=data,
                source=f"batch:{it['file']}",
            ))
        if not frames:
            raise _fail(422, "no frame accepted: " + "; ".join(r["reason"] for r in refused[:5]))
    except HTTPException as exc:
        if exc.status_code in (413, 422):
            gate.metrics.frames_rejected.labels(
                gate.metrics.tenant(key.tenant), f"http_{exc.status_code}").inc(
                max(1, len(form.getlist("images"))))
        raise
    finally:
        await form.close()
    try:
        status = await _call(gate, gate.submit, key.tenant, frames, refused,
                                          key.key_id)
    except BrokerUnavailable as exc:
        retry = str(cfg.retry_after_s)
        return JSONResponse({"detail": f"{exc}; retry in {retry} s (a retry is never "
                                       "counted twice)"}, status_code=503,
                            headers={"Retry-After": retry})
    except QueueFull:
        return _throttled(gate)
    label = gate.metrics.tenant(key.tenant)
    if len(refused) > expired:
        gate.metrics.frames_rejected.labels(label, "timestamp").inc(len(refused) - expired)
    if expired:
        gate.metrics.frames_rejected.labels(label, EXPIRED).inc(expired)
    return JSONResponse(
        {"batch_id": status.batch_id, "frames": status.frames, "duplicates": status.duplicates,
         "rejected": refused, "status": status.state,
         "status_url": f"/v1/batches/{status.batch_id}"},
        status_code=202,
    )


class BatchPage(BaseModel):
    batches: list[BatchState]
    # pass as ``before`` and ``before_id`` for the next page (None: no more)
    next_before: str | None
    next_before_id: str | None


@router.get("/v1/batches", summary="The tenant's camera batches, newest first",
            response_model=BatchPage)
def list_batches(
    request: Request,
    status: Literal["queued", "processing", "done", "failed"] | None = Query(
        None, description="Only batches in this state (failed: to find what to replay)."),
    before: str | None = Query(
        None, max_length=64, description="The previous page's next_before (a time, ISO "
        "8601 with offset): only batches received before it..."),
    before_id: str = Query(
        "", max_length=64, description="...or at that time with a smaller batch id (the "
        "previous page's next_before_id)."),
    limit: int = Query(100, ge=1, le=1000),
    key: ApiKey = Depends(require("camera", "admin", "analyst")),
) -> dict[str, Any]:
    cursor = None
    if before is not None:
        try:
            at = parse_ts(before)
        except TimestampError as exc:
            raise HTTPException(422, f"before: {exc}") from None
        cursor = (at.astimezone(UTC).replace(tzinfo=None), before_id)
    # one more than asked: a cursor only when another page has batches (null: no more)
    page = service_of(request).processor.recent(
        key.tenant, state=status, before=cursor, limit=limit + 1,
        key_id=key.key_id if key.role == "camera" else None)
    more = len(page) > limit
    page = page[:limit]
    last = page[-1] if more else None
    return {"batches": [st.as_dict() for st in page],
            # Z, not +00:00: a "+" pasted into a URL unencoded reads as a space
            "next_before": iso_utc(last.received_at) if last else None,
            "next_before_id": last.batch_id if last else None}


@router.get("/v1/batches/{batch_id}", summary="Status of a camera batch",
            response_model=BatchState, responses=errors(404))
def get_batch(
    batch_id: str, request: Request,
    key: ApiKey = Depends(require("camera", "admin", "analyst")),
) -> dict[str, Any]:
    st = service_of(request).processor.status(key.tenant, batch_id)
    if st is None or (key.role == "camera" and st.key_id != key.key_id):
        raise HTTPException(404, f"no batch {batch_id} of this key")
    return st.as_dict()
