"""Face crops on disk, only when ``privacy.keep_crops`` is on (off by default).

Crops are filed by tenant and UTC day, ``crops/<tenant>/<YYYY-MM-DD>/<face_image_id>.jpg``,
so retention is a matter of deleting whole day folders and erasure of one face is one unlink.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import cv2

from revisit.records import Batch


def crop_path(root: Path, tenant: str, ts: datetime, face_image_id: str) -> Path:
    return root / tenant / ts.astimezone(UTC).date().isoformat() / f"{face_image_id}.jpg"


def save_crops(root: Path, batch: Batch) -> int:
    """Write every face crop the batch still carries; returns how many were written."""
    written = 0
    for face in batch.faces:
        if face.crop is None:
            continue
        path = crop_path(root, face.tenant, face.ts, face.face_image_id)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", face.crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if ok:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.tobytes())
            tmp.replace(path)
            written += 1
        face.crop = None
    return written


def purge_crop_days(tenant_root: Path, before: date) -> int:
    """Delete one tenant's day folders older than ``before``; returns folders removed."""
    if not tenant_root.is_dir():
        return 0
    removed = 0
    for day_dir in tenant_root.iterdir():
        try:
            day = date.fromisoformat(day_dir.name)
        except ValueError:
            continue
        if day < before:
            shutil.rmtree(day_dir)
            removed += 1
    return removed


def erase_crops(root: Path, tenant: str, face_image_ids: set[str]) -> int:
    """Remove the crops of the given faces (visitor erasure)."""
    base = root / tenant
    if not base.exists() or not face_image_ids:
        return 0
    removed = 0
    for path in base.glob("*/*.jpg"):
        if path.stem in face_image_ids:
            path.unlink()
            removed += 1
    return removed
