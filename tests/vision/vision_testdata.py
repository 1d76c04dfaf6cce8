"""Helpers shared by the vision tests (conftest holds the fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from revisit.records import Frame

TS = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def make_frame(data: bytes, image_id: str, tenant: str = "t1") -> Frame:
    return Frame(tenant=tenant, camera_id="cam-1", location_id="store-1", image_id=image_id,
                 ts=TS, data=data, source=image_id)


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()
