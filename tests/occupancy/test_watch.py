"""Rules are judged at every snapshot of a batch, and a location's counting cameras are
where the registry puts them (a camera moved to another store counts there)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from revisit.config import Settings
from revisit.config.occupancy import CameraZones, LocationOccupancy
from revisit.occupancy.alerts import AlertBook, AlertRule
from revisit.occupancy.db import OccupancyDB
from revisit.occupancy.watch import Watcher
from revisit.records import Batch, Frame, PeopleCount
from revisit.store.base import SightingStore
from revisit.tenancy.db import Tenancy

T0 = datetime(2024, 5, 1, 14, tzinfo=UTC)


def _counts(camera: str, location: str, people: list[float], step_s: int = 10
            ) -> list[PeopleCount]:
    return [PeopleCount("acme", camera, location, f"{camera}-{i}", T0 + timedelta(seconds=step_s * i),
                        "", n, int(n)) for i, n in enumerate(people)]


def _store(store: SightingStore, counts: list[PeopleCount]) -> None:
    frames = [Frame(c.tenant, c.camera_id, c.location_id, c.image_id, c.ts) for c in counts]
    store.write(Batch("b", frames=frames, counts=counts))


def _setup(store: SightingStore) -> OccupancyDB:
    ten = Tenancy(store)
    ten.create_tenant("acme")
    for loc in ("101", "102"):
        ten.add_location("acme", loc, loc)
    ten.add_camera("acme", "door", "101")
    db = OccupancyDB(store, ten)
    db.set_camera("acme", "door", CameraZones(counting=True))
    for loc in ("101", "102"):
        db.set_location("acme", loc, LocationOccupancy(capacity=100))
    return db


def test_a_peak_between_two_snapshots_of_one_batch_alerts(store: SightingStore) -> None:
    _setup(store)
    book = AlertBook(store)
    book.put_rule("acme", AlertRule(rule_id="busy", location_id="101", metric="count",
                                    above=70, clear_below=60))
    counts = _counts("door", "101", [40, 78, 50])  # one batch: the peak is in its middle
    _store(store, counts)
    Watcher(store, Settings()).after(counts)
    (alert,) = book.alerts("acme")
    assert alert["value"] == 78.0 and alert["ended_at"] is not None  # and it ended at 50


def test_a_moved_camera_counts_where_the_registry_puts_it(store: SightingStore) -> None:
    db = _setup(store)
    first = _counts("door", "101", [30])
    _store(store, first)  # its first frames came from 101
    assert db.live("acme", "101", now=first[0].ts).count == 30
    Tenancy(store).add_camera("acme", "door", "102")  # moved
    later = [PeopleCount("acme", "door", "102", "door-moved", T0 + timedelta(minutes=5), "",
                         12, 12)]
    _store(store, later)
    now = db.live("acme", "102", now=later[0].ts)
    assert (now.count, now.cameras) == (12, 1)
    assert db.live("acme", "101", now=later[0].ts).cameras == 0


def test_two_frames_of_one_camera_at_one_time_count_a_zone_once(store: SightingStore) -> None:
    """A burst (two snapshots stamped the same second): the live answer takes one frame per
    camera for its named zones as for its count, not the zones' sum over both frames."""
    db = _setup(store)
    db.set_camera("acme", "door", CameraZones(
        counting=True, named={"queue": [(0, 0), (10, 0), (10, 10)]}))
    counts = [PeopleCount("acme", "door", "101", image, T0, zone, n, int(n))
              for image in ("door-1", "door-2") for zone, n in (("", 5.0), ("queue", 3.0))]
    _store(store, counts)
    now = db.live("acme", "101", now=T0)
    assert (now.count, now.zones) == (5.0, {"queue": 3.0})


def test_exactly_at_a_rules_threshold_is_not_above_it(store: SightingStore) -> None:
    """4.9 of 7 people is 70 %, not above 70 (floating point made it 70.00000000000001)."""
    db = _setup(store)
    db.set_location("acme", "101", LocationOccupancy(capacity=7))
    book = AlertBook(store)
    book.put_rule("acme", AlertRule(rule_id="full", location_id="101", above=70))
    counts = _counts("door", "101", [4.9])
    _store(store, counts)
    Watcher(store, Settings()).after(counts)
    assert book.alerts("acme") == []


def _two_cameras_out_of_step(store: SightingStore) -> OccupancyDB:
    """Two cameras of disjoint areas of location 101, a snapshot every 90 s for 5 minutes,
    out of step: door sees 10 people from 0 s, back 4 from 45 s."""
    db = _setup(store)
    Tenancy(store).add_camera("acme", "back", "101")
    db.set_camera("acme", "back", CameraZones(counting=True))
    _store(store, [PeopleCount("acme", cam, "101", f"{cam}-{i}", T0 + timedelta(seconds=s),
                               "", n, n)
                   for cam, n, offset in (("door", 10, 0), ("back", 4, 45))
                   for i, s in enumerate(range(offset, 300, 90))])
    return db


def test_a_minute_one_camera_missed_keeps_its_people(store: SightingStore) -> None:
    """Two cameras of disjoint areas, a snapshot every 90 s, out of step: each minute holds
    both areas (the one that missed it with what it last saw, fresh as in the live
    answer), not one area at a time."""
    db = _two_cameras_out_of_step(store)
    rows = db.history("acme", T0, T0 + timedelta(hours=1), ("101",))
    assert [r.people for r in rows] == [14.0] * 5
    # a camera silent for longer than stale_after_s (120 s) is not held
    late = [PeopleCount("acme", "door", "101", "door-late", T0 + timedelta(minutes=9), "",
                        10, 10)]
    _store(store, late)
    assert db.history("acme", T0, T0 + timedelta(hours=1), ("101",))[-1].people == 10.0


def test_a_minutes_history_does_not_depend_on_where_the_range_starts(
        store: SightingStore) -> None:
    """A camera's people are held into the first minutes of a range from its snapshot
    before the range (fresh): a minute reads the same whether the range starts before or
    after that snapshot."""
    # door every 90 s (minutes 0, 1, 3, 4), back every 90 s from 45 s (minutes 0, 2, 3)
    db = _two_cameras_out_of_step(store)
    minute = T0 + timedelta(minutes=2)  # door's last snapshot is at 90 s, a minute before
    wide = {r.minute: r.people for r in db.history("acme", T0, T0 + timedelta(hours=1))}
    narrow = {r.minute: r.people for r in db.history("acme", minute, T0 + timedelta(hours=1))}
    assert wide[minute] == narrow[minute] == 14.0
    assert narrow == {m: p for m, p in wide.items() if m >= minute}
    # one older than stale_after_s (120 s) before the start is not held
    late = T0 + timedelta(minutes=9)
    _store(store, [PeopleCount("acme", "back", "101", "back-late", late, "", 4, 4)])
    assert [r.people for r in db.history("acme", late, late + timedelta(minutes=1))] == [4.0]


def test_closing_a_run_waits_for_its_alerts_to_be_delivered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The end of `revisit ingest`: an alert on its way (here retried once) is delivered
    and its attempts logged before the store closes."""
    from tests.receivers import webhook_receiver

    from revisit.config import load_settings
    from revisit.pipeline import Runtime
    from revisit.store.duckdb_store import DuckDBStore

    with webhook_receiver() as (url, got):
        got.fail_first = 1
        rt = Runtime(load_settings(None, data=tmp_path / "d",
                                   alerts={"backoff_s": 0.5, "private_webhooks": True}))
        _setup(rt.store)
        AlertBook(rt.store).put_rule("acme", AlertRule(
            rule_id="busy", location_id="101", metric="count", above=70, webhook_url=url))
        counts = _counts("door", "101", [78])
        rt.store_batch(Batch("b", frames=[Frame(c.tenant, c.camera_id, c.location_id,
                                                 c.image_id, c.ts) for c in counts],
                             counts=counts))
        rt.close()
        assert len(got.posts) == 1
    store = DuckDBStore(tmp_path / "d" / "revisit.duckdb")
    try:
        with store.read() as s:
            oks = [r[0] for r in s.execute("SELECT ok FROM alert_deliveries ORDER BY attempt")
                   .fetchall()]
        assert oks == [False, True]
    finally:
        store.close()


def test_a_rule_put_over_http_may_leave_its_id_to_the_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False)
    env = next(gen)
    try:
        admin = env.auth("admin")
        assert env.client.put("/v1/locations/101/capacity", headers=admin,
                              json={"capacity": 50}).status_code == 200
        r = env.client.put("/v1/alert-rules/busy", headers=admin,
                           json={"location_id": "101", "above": 80})
        assert r.status_code == 200 and r.json()["rule_id"] == "busy", r.text
        assert env.client.get("/v1/alert-rules/busy", headers=admin).json()["above"] == 80
        r = env.client.put("/v1/alert-rules/busy", headers=admin,
                           json={"rule_id": "other", "location_id": "101", "above": 80})
        assert r.status_code == 422 and "is not busy" in r.text
    finally:
        gen.close()
