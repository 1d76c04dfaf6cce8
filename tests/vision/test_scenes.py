"""Each camera's empty scene: people who move are not in it, a face that stayed is
blurred, and the pipeline stores it for the heatmaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from tests.conftest import lfw_photo

from revisit.config import load_settings
from revisit.vision.scenes import SceneKeeper, pixel_median
from revisit.vision.stages import Vision

T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


def _room() -> np.ndarray:
    x = np.linspace(40, 200, 640, dtype=np.float32)
    y = np.linspace(0, 40, 480, dtype=np.float32)[:, None]
    return np.dstack([x + y, x * 0.8 + y, x * 0.6 + y]).astype(np.uint8)


def test_people_who_move_are_not_in_the_scene() -> None:
    keeper = SceneKeeper(lambda img: [])
    scenes = []
    for i in range(6):
        frame = _room()
        frame[100:220, 60 + 90 * i:120 + 90 * i] = 255  # someone walking through
        if (s := keeper.observe("t", "c1", T0 + timedelta(minutes=i), frame)) is not None:
            scenes.append(s)
    assert len(scenes) == 1 and scenes[0].frames == 5
    assert (scenes[0].width, scenes[0].height) == (640, 480)
    img = cv2.imdecode(np.frombuffer(scenes[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[1] == 480  # stored small
    room = cv2.resize(_room(), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(img.astype(int) - room.astype(int)).mean() < 3
    assert img.max() < 250  # the white walker is gone
    # samples closer than a minute are not taken; the next scene waits for the refresh
    assert keeper.observe("t", "c1", T0 + timedelta(minutes=5, seconds=30), _room()) is None


def test_a_face_that_stays_is_blurred(tmp_path) -> None:
    vision = Vision(load_settings(None, data=tmp_path))
    detector = vision.detector
    face = cv2.resize(cv2.imread(str(lfw_photo("Colin_Powell", 1))), (200, 200))
    frame = _room()
    frame[120:320, 220:420] = face  # a poster, or someone who did not move
    assert detector.predict([frame])[0]  # the detector sees it in the frame
    keeper = SceneKeeper(lambda img: [d.bbox for d in detector.predict([img])[0]])
    scene = None
    for i in range(5):
        scene = keeper.observe("t", "c1", T0 + timedelta(minutes=i), frame.copy()) or scene
    assert scene is not None
    img = cv2.imdecode(np.frombuffer(scene.jpeg, np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(img, (640, 480))
    assert not detector.predict([big])[0]  # no face left in what is stored


def test_the_pipeline_stores_each_cameras_scene(tmp_path) -> None:
    from revisit.pipeline import Runtime
    from revisit.records import Frame

    room = _room()
    _ok, jpg = cv2.imencode(".jpg", room)
    def frames() -> list[Frame]:  # detection releases the bytes: fresh frames per run
        return [Frame(tenant="default", camera_id="c1", location_id="101", image_id=f"s{i}",
                      ts=T0 + timedelta(minutes=i), data=jpg.tobytes()) for i in range(6)]

    rt = Runtime(load_settings(None, data=tmp_path))
    try:
        summary = rt.ingest(iter(frames()))
        assert summary.frames == 6 and not summary.rejected
        scene = rt.store.scene("default", "c1")
    finally:
        rt.close()
    assert scene is not None and scene[:2] == (640, 480)
    off = Runtime(load_settings(None, data=tmp_path / "off",
                                privacy={"scene_backgrounds": False}))
    try:
        assert off.ingest(iter(frames())).frames == 6
        assert off.store.scene("default", "c1") is None
    finally:
        off.close()


def test_distributed_detect_workers_send_scenes_through_the_queue(tmp_path) -> None:
    """A detect worker keeps scenes too; they travel in the queue format to the store."""
    from revisit.distributed.worker import _handler
    from revisit.queue.codec import decode_batch, encode_batch
    from revisit.records import Batch, Frame
    from revisit.store.duckdb_store import DuckDBStore

    _ok, jpg = cv2.imencode(".jpg", _room())
    settings = load_settings(None, data=tmp_path)
    detect, _ = _handler(settings, "detect")
    out = detect(Batch("b1", frames=[
        Frame(tenant="default", camera_id="c1", location_id="101", image_id=f"s{i}",
              ts=T0 + timedelta(minutes=i), data=jpg.tobytes()) for i in range(6)]))
    carried = decode_batch(encode_batch(out[0]))
    assert [(s.camera_id, s.width, s.height) for s in carried.scenes] == [("c1", 640, 480)]
    store = DuckDBStore(str(tmp_path / "s.duckdb"))
    try:
        store.write(carried)
        assert store.scene("default", "c1")[:2] == (640, 480)
    finally:
        store.close()


@pytest.mark.parametrize("n", [1, 2, 5, 6, 15])
def test_pixel_median_is_numpys_median(n: int) -> None:
    rng = np.random.default_rng(n)
    images = [rng.integers(0, 256, (7, 9, 3), dtype=np.uint8) for _ in range(n)]
    expected = np.median(np.stack(images), axis=0).astype(np.uint8)
    assert np.array_equal(pixel_median([im.copy() for im in images]), expected)
