"""Face crops, only when ``privacy.keep_crops`` is on (off by default).

Crops are rows of the store (``face_crops``: JPEG bytes by tenant and face), written in the
transaction of the batch that found the face, so erasure and retention treat them as every
other row. Versions before that wrote files, ``crops/<tenant>/<YYYY-MM-DD>/<face>.jpg``,
in one machine's data directory: erasure and retention still look for those.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np

JPEG_QUALITY = 90


def encode_crop(crop: np.ndarray) -> bytes | None:
    """An aligned crop as JPEG (None if it cannot be encoded)."""
    import cv2  # here: the stores and the privacy code load without OpenCV

    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes() if ok else None


def purge_crop_days(tenant_root: Path, before: date) -> int:
    """Delete one tenant's day folders of crop files older than ``before``; returns folders
    removed."""
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


def crop_files(root: Path, tenant: str, face_image_ids: set[str]) -> list[Path]:
    """The crop files an earlier version wrote of the given faces."""
    base = root / tenant
    if not base.exists() or not face_image_ids:
        return []
    return sorted(p for p in base.glob("*/*.jpg") if p.stem in face_image_ids)


def erase_crops(root: Path, tenant: str, face_image_ids: set[str]) -> int:
    """Remove the crop files of the given faces (visitor erasure)."""
    files = crop_files(root, tenant, face_image_ids)
    for path in files:
        path.unlink()
    return len(files)
