"""Heatmaps from the people counter: where people stood (faces or not) on a counting
camera; face sightings on the others, or when asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.api.conftest import Env, make_env

from revisit.records import Batch, Frame, PeopleCount
from revisit.store.testing import batch, sighting


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path, processing=False)


def _hot(png: bytes) -> tuple[float, float]:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    red = np.clip(img[..., 2].astype(int) - img[..., 0].astype(int), 0, None)
    ys, xs = np.nonzero(red > 40)
    scale = 640 / img.shape[1]
    return xs.mean() * scale, ys.mean() * scale


def test_people_where_the_camera_counts_faces_otherwise(env: Env) -> None:
    day = datetime(2024, 3, 4, 10, tzinfo=UTC)
    store = env.service.runtime.store
    frames, counts = [], []
    for i in range(20):  # people standing around (500, 100); faces seen around (100, 400)
        ts = day + timedelta(seconds=10 * i)
        frames.append(Frame("acme", "camA", "101", f"f{i}", ts))
        pts = [(500 + i % 5, 100 + i % 3), (505, 110)]
        counts.append(PeopleCount("acme", "camA", "101", f"f{i}", ts, "", 2.0, 2, pts))
    store.write(Batch("b1", frames=frames, counts=counts))
    store.write(batch([sighting("V-000001", day + timedelta(seconds=s), "101", "camA",
                                tenant="acme") for s in range(0, 60, 10)]))
    params = {"from": "2024-03-04", "to": "2024-03-04"}
    auth = env.auth("analyst")
    people = env.client.get("/v1/cameras/camA/heatmap.png", params=params, headers=auth)
    assert people.status_code == 200
    x, y = _hot(people.content)
    assert abs(x - 502) < 15 and abs(y - 105) < 15
    faces = env.client.get("/v1/cameras/camA/heatmap.png",
                           params={**params, "source": "faces"}, headers=auth)
    fx, fy = _hot(faces.content)  # store.testing's sightings: a 64x80 box at (10, 20)
    assert abs(fx - 42) < 15 and abs(fy - 60) < 15
    # camB counts nobody: its map is its faces' (none here: no hot spot at all)
    assert env.client.get("/v1/cameras/camB/heatmap.png", params=params,
                          headers=auth).status_code == 200
