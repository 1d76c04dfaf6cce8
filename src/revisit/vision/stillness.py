"""Unchanged empty frames: a camera's snapshot that shows the same empty scene as the last
one examined needs no face detector.

A frame is skipped only when (1) the camera's last examined frame had no detection at all,
(2) nothing in it changed by more than ``max_change`` grey levels anywhere (a small
thumbnail, blurred against sensor and JPEG noise: a person coming in changes a patch by
far more, a global measure such as the mean would miss a small face), and (3) that frame
is at most ``max_age`` old (a detection runs at least that often). The reference stays the
last examined frame, so a slow drift (daylight) cannot creep past the test step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import cv2
import numpy as np

THUMB = (160, 120)


@dataclass(slots=True)
class _Seen:
    thumb: np.ndarray
    ts: datetime
    empty: bool


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (5, 5), 0).astype(np.int16)


class StillCameras:
    def __init__(self, max_change: int = 18, max_age: timedelta = timedelta(minutes=5)) -> None:
        self.max_change, self.max_age = max_change, max_age
        self._last: dict[tuple[str, str], _Seen] = {}
        self.examined = 0
        self.skipped = 0

    def unchanged_and_empty(self, tenant: str, camera: str, ts: datetime,
                            pixels: np.ndarray) -> tuple[bool, np.ndarray]:
        """(skip it?, its thumbnail for :meth:`saw`)."""
        thumb = thumbnail(pixels)
        prev = self._last.get((tenant, camera))
        skip = (prev is not None and prev.empty and timedelta(0) <= ts - prev.ts <= self.max_age
                and int(np.abs(thumb - prev.thumb).max()) < self.max_change)
        if skip:
            self.skipped += 1
        return skip, thumb

    def saw(self, tenant: str, camera: str, ts: datetime, thumb: np.ndarray,
            empty: bool) -> None:
        """The frame was examined: the new reference of its camera."""
        self.examined += 1
        self._last[(tenant, camera)] = _Seen(thumb, ts, empty)
