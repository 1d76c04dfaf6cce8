"""Zones of a camera (image pixels): where people count, where nothing counts, and named
areas counted on their own.

- the *counting zone* (``count_zone``; none: the whole frame) is where a person counts
  toward the camera's occupancy;
- *exclusion zones* (``exclude``) count nothing and give no sightings: a poster, a screen,
  the staff area behind a counter, a window onto the street;
- *named zones* (``named``, e.g. "checkout 3 queue") are counted on their own, also
  inside an exclusion zone's complement only.

A person is where their counting point is (:class:`revisit.vision.people.Person`); a face
is where its box centre is.
"""

from __future__ import annotations

import cv2
import numpy as np

from revisit.config.occupancy import CameraZones, Point


def mask_polygon(mask: np.ndarray) -> list[Point]:
    """The outline of the largest region of a binary mask (e.g. a data set's ROI image), as
    a counting zone."""
    found, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_SIMPLE)
    if not found:
        raise ValueError("the mask has no region")
    biggest = max(found, key=cv2.contourArea)
    approx = cv2.approxPolyDP(biggest, 1.5, True)
    return [(float(p[0][0]), float(p[0][1])) for p in approx]


def render_zones(zones: CameraZones, width: int | None, height: int | None,
                 background: bytes | None) -> bytes:
    """The camera's zones drawn over its empty scene (or a grey frame), PNG: the counting
    zone green, exclusion zones red, named zones blue with their names."""
    if background:
        img = cv2.imdecode(np.frombuffer(background, np.uint8), cv2.IMREAD_COLOR)
    else:
        points = [p for poly in [zones.count_zone or [], *zones.exclude, *zones.named.values()]
                  for p in poly]
        width = width or int(max((x for x, _ in points), default=640)) + 20
        height = height or int(max((y for _, y in points), default=480)) + 20
        scale = min(1.0, 480 / width)
        img = np.full((max(1, round(height * scale)), max(1, round(width * scale)), 3), 90,
                      np.uint8)
    s = img.shape[1] / (width or img.shape[1])
    overlay = img.copy()

    def poly(p: list[Point]) -> np.ndarray:
        return np.round(np.asarray(p, np.float32) * s).astype(np.int32).reshape(-1, 1, 2)

    if zones.count_zone:
        cv2.polylines(img, [poly(zones.count_zone)], True, (60, 200, 60), 2)
    for p in zones.exclude:
        cv2.fillPoly(overlay, [poly(p)], (40, 40, 220))
    for name, p in zones.named.items():
        cv2.polylines(img, [poly(p)], True, (230, 140, 30), 2)
        x, y = poly(p).reshape(-1, 2).min(axis=0)
        cv2.putText(img, name, (int(x) + 3, int(y) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (230, 140, 30), 1, cv2.LINE_AA)
    img = cv2.addWeighted(overlay, 0.4, img, 0.6, 0)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("could not encode the zones image")
    return png.tobytes()
