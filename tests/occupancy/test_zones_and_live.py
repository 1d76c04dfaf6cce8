"""Zones decide who counts; the overlap rule combines a location's cameras; levels and the
sign follow capacity; a silent location says 'no data'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from revisit.config.occupancy import STORED, CameraZones, LocationOccupancy
from revisit.occupancy.live import CameraCount, combine, occupancy
from revisit.occupancy.zones import mask_polygon

SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100)]
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_counting_exclusion_and_named_zones() -> None:
    z = CameraZones(counting=True, count_zone=SQUARE, exclude=[[(0, 0), (20, 0), (20, 20), (0, 20)]],
                    named={"till": [(50, 50), (100, 50), (100, 100), (50, 100)]})
    assert z.zones_of(60, 60) == ["", "till"]
    assert z.zones_of(30, 30) == [""]
    assert z.zones_of(10, 10) == []  # excluded: counts nowhere
    assert z.zones_of(150, 150) == []  # outside the counting zone
    assert z.excluded(10, 10) and not z.excluded(30, 30)
    whole = CameraZones(counting=True)
    assert whole.zones_of(5000, 5000) == [""]  # no counting zone: the whole frame


@pytest.mark.parametrize(("doc", "message"), [
    ({"count_zone": [(0, 0), (1, 1)]}, "at least 3 points"),
    ({"count_zone": [(5, 5), (5, 5), (5, 5)]}, "encloses no area"),
    ({"named": {"q": [(0, 0), (10, 10), (20, 20), (30, 30)]}}, "encloses no area"),
    ({"exclude": [[(0, 0), (1, 1), (-5, 3)]]}, "outside"),
    ({"named": {"": SQUARE}}, "zone name"),
    ({"scale": 0}, "greater than 0"),
    ({"colour": "red"}, "Extra inputs"),
])
def test_bad_zones_are_refused_with_the_reason(doc: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CameraZones.model_validate(doc)


def test_a_zone_stored_before_a_check_existed_still_loads() -> None:
    """The pipeline reads every camera's settings: one saved before the area check must
    not stop it."""
    flat = '{"counting": true, "count_zone": [[5, 5], [5, 5], [5, 5]]}'
    with pytest.raises(ValidationError, match="encloses no area"):
        CameraZones.model_validate_json(flat)
    assert CameraZones.model_validate_json(flat, context=STORED).counting


def test_a_mask_becomes_a_polygon() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[20:80, 50:150] = 255
    poly = mask_polygon(mask)
    z = CameraZones(count_zone=poly)
    assert z.counted(100, 50) and not z.counted(10, 50) and not z.counted(100, 95)


def test_overlap_groups_take_the_maximum_and_groups_add_up() -> None:
    # entrance seen by two cameras (one view), the back room by a third
    counts = [CameraCount("door-a", "entrance", 4, NOW), CameraCount("door-b", "entrance", 6, NOW),
              CameraCount("back", "back", 3, NOW)]
    assert combine(counts) == 9


def test_levels_sign_and_no_data() -> None:
    cfg = LocationOccupancy(capacity=20, amber_pct=70, red_pct=90, stale_after_s=60)
    fresh = [CameraCount("c1", "c1", 15, NOW - timedelta(seconds=10))]
    o = occupancy("L1", cfg, 1, fresh, {}, NOW)
    assert (o.pct, o.level, o.sign) == (75.0, "amber", "enter")
    o = occupancy("L1", cfg, 1, [CameraCount("c1", "c1", 19, NOW)], {}, NOW)
    assert (o.level, o.sign) == ("red", "wait")
    stale = [CameraCount("c1", "c1", 3, NOW - timedelta(minutes=5))]
    o = occupancy("L1", cfg, 1, stale, {}, NOW)
    assert (o.count, o.level, o.sign) == (None, "no_data", "no_data")  # not a stale green
    half = occupancy("L1", cfg, 2, fresh, {}, NOW).as_dict()
    assert half["complete"] is False and half["reporting"] == ["c1"]
    with pytest.raises(ValidationError, match="below red_pct"):
        LocationOccupancy(capacity=10, amber_pct=95, red_pct=90)


@pytest.mark.parametrize(("count", "capacity", "level"), [
    (18.9, 21, "red"), (18.89, 21, "amber"), (18.9, 27, "amber"), (18.88, 27, "green")])
def test_a_level_reached_exactly_is_that_level(count: float, capacity: int, level: str) -> None:
    """100 * 18.9 / 21 is 89.99999999999999 in floating point: still 90 %, red."""
    cfg = LocationOccupancy(capacity=capacity, amber_pct=70, red_pct=90)
    o = occupancy("L1", cfg, 1, [CameraCount("c1", "c1", count, NOW)], {}, NOW)
    assert o.level == level


def test_settings_file_zones_and_capacities_reach_the_store(tmp_path) -> None:
    from revisit.config import load_settings
    from revisit.occupancy.db import OccupancyDB
    from revisit.pipeline import Runtime
    from revisit.tenancy.db import Tenancy

    occ = {"cameras": {"camA": {"counting": True, "exclude": [SQUARE]}},
           "locations": {"101": {"capacity": 30, "red_pct": 80}}}
    rt = Runtime(load_settings(None, data=tmp_path, occupancy=occ))
    try:
        db = OccupancyDB(rt.store, Tenancy(rt.store))
        assert db.camera("default", "camA").excluded(50, 50)
        assert db.location("default", "101").capacity == 30
        audit = Tenancy(rt.store).audit_log("default")
        assert {a["action"] for a in audit} >= {"occupancy.camera.put", "occupancy.location.put"}
        assert {a["actor"] for a in audit} == {"config"}
    finally:
        rt.close()
    rt = Runtime(load_settings(None, data=tmp_path, occupancy=occ))  # unchanged: no new entry
    try:
        assert len(Tenancy(rt.store).audit_log("default")) == len(audit)
    finally:
        rt.close()


def test_a_silent_cameras_zones_do_not_count() -> None:
    cfg = LocationOccupancy(capacity=20, stale_after_s=60)
    fresh = CameraCount("c1", "c1", 5, NOW - timedelta(seconds=5))
    silent = CameraCount("c2", "c2", 7, NOW - timedelta(minutes=30))
    zones = {"c1": {"till": 2.0}, "c2": {"till": 8.0, "door": 1.0}}
    o = occupancy("L1", cfg, 2, [fresh, silent], zones, NOW)
    assert o.count == 5 and o.zones == {"till": 2.0}


def test_faces_get_their_named_zone_or_are_vetoed() -> None:
    from revisit.occupancy.counting import Counting, ZoneBook
    from revisit.records import Dropped, Face

    z = CameraZones(exclude=[[(0, 0), (50, 0), (50, 50), (0, 50)]],
                    named={"till": [(100, 0), (200, 0), (200, 100), (100, 100)]})
    counting = Counting(ZoneBook(lambda: {("t", "c"): z}))

    def face(x: int) -> Face:
        return Face("t", "c", "L", "i", NOW, f"F{x}", (x, 10, 20, 20),
                    np.zeros((5, 2), np.float32), 0.9, 0.8)

    dropped: list[Dropped] = []
    kept = counting.veto([face(10), face(140), face(300)], dropped)
    assert [(f.bbox[0], f.zone) for f in kept] == [(140, "till"), (300, "")]
    assert [d.reason for d in dropped] == ["excluded_zone"]
