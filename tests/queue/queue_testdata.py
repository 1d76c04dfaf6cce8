"""Batches for the queue tests: every field of every record filled in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from revisit.queue.base import StageQueue
from revisit.records import Batch, Exemplar, Face, Frame, PeopleCount, Rejected, Scene, Sighting

TS = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))


def full_batch() -> Batch:
    rng = np.random.default_rng(7)
    emb = rng.standard_normal(128).astype(np.float32)
    emb /= np.linalg.norm(emb)
    crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    lm = rng.random((5, 2), dtype=np.float32) * 100
    frame = Frame("t1", "cam-1", "loc-1", "img-1", TS, data=b"\xff\xd8jpeg\x00bytes",
                  pixels=np.zeros((4, 4, 3), np.uint8), source="manifest.csv:3")
    face_full = Face("t1", "cam-1", "loc-1", "img-1", TS, "F-1", (10, 20, 30, 40), lm, 0.93,
                     0.71, creatable=False, crop=crop, embedding=emb, zone="till 3")
    face_bare = Face("t1", "cam-1", "loc-1", "img-1", TS, "F-2", (1, 2, 3, 4), lm, 0.5, 0.2)
    sighting = Sighting("t1", "V-0001A7", "F-1", "img-1", "cam-1", "loc-1", TS, (10, 20, 30, 40),
                        0.71, 0.82, new_visitor=True, embedding=emb, zone="till 3")
    sighting_bare = Sighting("t1", "V-2", "F-2", "img-1", "cam-1", "loc-1", TS, (1, 2, 3, 4),
                             0.2, 1.0)
    return Batch(
        batch_id="B-1",
        frames=[frame, Frame("t1", "cam-2", "loc-1", "img-2", TS, data=None)],
        faces=[face_full, face_bare],
        sightings=[sighting, sighting_bare],
        rejected=[Rejected("x.csv:4", "no timestamp", "img-9", "t2")],
        exemplars_added=[Exemplar("t1", "V-0001A7", "F-1", emb, 0.71, TS)],
        exemplars_dropped=[("t1", "F-0")],
        visitors_created=[("t1", "V-0001A7", TS)],
        scenes=[Scene("t1", "cam-1", 1920, 1080, b"\xff\xd8scene", 15, TS)],
        counts=[PeopleCount("t1", "cam-1", "loc-1", "img-1", TS, "", 7.25, 5, [(10, 20), (300, 41)]),
                PeopleCount("t1", "cam-1", "loc-1", "img-1", TS, "checkout 3", 2.0, 2)],
    )


def camera_batch(batch_id: str, camera: str = "cam-1", tenant: str = "t1") -> Batch:
    """A small batch of one frame of one camera (the partition key of the Kafka backend)."""
    ts = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
    return Batch(batch_id, frames=[Frame(tenant, camera, "loc-1", batch_id, ts, data=b"jpeg")])


# make_queue(consumer=None, maxsize=8) -> a handle on the test's queue (see conftest)
QueueMaker = Callable[..., StageQueue]
