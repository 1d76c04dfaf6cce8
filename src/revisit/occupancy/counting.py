"""The counting stage: people per frame and zone for cameras that count, beside face
detection (the same decoded frame), and the exclusion zones' veto on faces.

Cameras' settings come from the store (:class:`ZoneBook`, re-read every few seconds, so a
zone drawn through the API applies to the next frames without a restart). A camera
without settings, or with ``counting`` off, costs nothing here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from revisit.config.occupancy import CameraZones
from revisit.records import EXCLUDED, Dropped, Face, Frame, PeopleCount
from revisit.vision.people import Calibration, PersonDetector


class ZoneBook:
    """Every camera's :class:`CameraZones`, from ``load`` (the store), cached ``ttl_s``."""

    def __init__(self, load: Callable[[], dict[tuple[str, str], CameraZones]],
                 ttl_s: float = 10.0) -> None:
        self._load, self.ttl_s = load, ttl_s
        self._zones: dict[tuple[str, str], CameraZones] = {}
        self._at = -float("inf")
        self._lock = threading.Lock()

    def get(self, tenant: str, camera_id: str) -> CameraZones | None:
        return self.all().get((tenant, camera_id))

    def all(self) -> dict[tuple[str, str], CameraZones]:
        """Every camera's zones (what a model process is sent with each batch)."""
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._zones = self._load()
                self._at = time.monotonic()
            return self._zones


class Counting:
    """People counting and exclusion zones for the detect stage."""

    def __init__(self, zones: ZoneBook, threads: int = 1,
                 detector: PersonDetector | None = None) -> None:
        self.zones = zones
        self._threads = threads
        self._detector = detector

    @property
    def detector(self) -> PersonDetector:
        if self._detector is None:
            self._detector = PersonDetector(threads=self._threads)
        return self._detector

    def counts(self, frame: Frame) -> bool:
        """Whether the frame's camera counts people."""
        z = self.zones.get(frame.tenant, frame.camera_id)
        return z is not None and z.counting

    def count(self, frame: Frame, pixels: np.ndarray) -> list[PeopleCount]:
        """People in the frame's counting zone ("") and named zones; [] when the camera
        does not count."""
        z = self.zones.get(frame.tenant, frame.camera_id)
        if z is None or not z.counting:
            return []
        people = self.detector.predict([pixels])[0]
        raw: dict[str, int] = {"": 0, **dict.fromkeys(z.named, 0)}
        counted: list[tuple[int, int]] = []
        for p in people:
            names = z.zones_of(*p.point)
            for name in names:
                raw[name] += 1
            if "" in names:
                counted.append((round(p.point[0]), round(p.point[1])))
        # A camera's own line (fitted on its frames: revisit admin calibrate-counter) corrects
        # the model's typical miss in that view; without one, people are counted as found
        # (another view's line would be wrong: the Mall's adds 4 people to an empty room).
        cal = (Calibration(scale=z.scale if z.scale is not None else 1.0,
                           offset=z.offset if z.offset is not None else 0.0)
               if z.scale is not None or z.offset is not None else None)
        out = []
        for name, n in raw.items():
            # the line fits the whole view: a named zone (a queue) is counted as found,
            # and nobody found is nobody there
            value = float(n) if name or n == 0 or cal is None else cal.apply(n)
            out.append(PeopleCount(frame.tenant, frame.camera_id, frame.location_id,
                                   frame.image_id, frame.ts, name, round(value, 2), n,
                                   counted if name == "" else []))
        return out

    def veto(self, faces: list[Face], dropped: list[Dropped]) -> list[Face]:
        """Faces whose centre is in an exclusion zone of their camera become no sighting;
        the others get the named zone they are in (the first by name), for camera paths."""
        kept = []
        for f in faces:
            z = self.zones.get(f.tenant, f.camera_id)
            if z is None:
                kept.append(f)
                continue
            x, y, w, h = f.bbox
            cx, cy = x + w / 2, y + h / 2
            if z.exclude and z.excluded(cx, cy):
                dropped.append(Dropped(f.tenant, f.image_id, f.bbox, EXCLUDED,
                                       "face centre in an exclusion zone"))
                continue
            f.zone = next((n for n in sorted(z.named) if n in z.zones_of(cx, cy)), "")
            kept.append(f)
        return kept
