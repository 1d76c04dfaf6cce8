"""Unchanged empty frames skip the face detector; anything that could be a person does
not: a small face, a frame after one with a face, a frame long after the last examined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
from tests.conftest import lfw_photo

from revisit.config import load_settings
from revisit.records import Frame
from revisit.vision.stillness import StillCameras

T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def _room(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.linspace(40, 200, 640, dtype=np.float32)
    img = np.dstack([x, x * 0.8, x * 0.6]).repeat(480, axis=0).reshape(480, 640, 3)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)  # sensor noise


def _with_face(img: np.ndarray, size: int) -> np.ndarray:
    face = cv2.resize(cv2.imread(str(lfw_photo("Colin_Powell", 1)))[60:190, 60:190], (size, size))
    out = img.copy()
    out[200:200 + size, 300:300 + size] = face
    return out


def test_only_an_unchanged_empty_scene_is_skipped() -> None:
    still = StillCameras()
    t = T0
    for i, (img, expect) in enumerate([
        (_room(0), False),  # nothing to compare with
        (_room(1), True),  # the same empty room, other noise
        (_with_face(_room(2), 24), False),  # a small face walks in
    ]):
        skip, thumb = still.unchanged_and_empty("t", "c1", t, img)
        assert skip is expect, i
        if not skip:
            still.saw("t", "c1", t, thumb, empty=i != 2)
        t += timedelta(seconds=15)
    # after a frame with a face, even an identical one is examined
    skip, thumb = still.unchanged_and_empty("t", "c1", t, _with_face(_room(3), 24))
    assert not skip
    still.saw("t", "c1", t, thumb, empty=True)
    # long after the last examined frame: examined again
    assert not still.unchanged_and_empty("t", "c1", t + timedelta(minutes=6), _room(4))[0]
    assert not still.unchanged_and_empty("t", "c2", t, _room(4))[0]  # per camera


def test_the_pipeline_skips_empty_repeats_and_still_finds_who_comes(tmp_path) -> None:
    from revisit.pipeline import Runtime

    def jpg(img: np.ndarray) -> bytes:
        return cv2.imencode(".jpg", img)[1].tobytes()

    imgs = [_room(i) for i in range(6)] + [_with_face(_room(9), 110)]
    frames = [Frame("default", "c1", "101", f"f{i}", T0 + timedelta(seconds=15 * i),
                    data=jpg(img)) for i, img in enumerate(imgs)]
    rt = Runtime(load_settings(None, data=tmp_path, privacy={"scene_backgrounds": False}))
    try:
        summary = rt.ingest(iter(frames))
        assert summary.frames == 7 and summary.sightings == 1
        assert rt.vision.still.skipped == 5 and rt.vision.still.examined == 2
        assert rt.store.stats("default")["frames"] == 7  # skipped ones stored as processed
    finally:
        rt.close()
