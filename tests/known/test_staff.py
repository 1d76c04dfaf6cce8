"""Staff exclusion: a face joins an enrolled staff member only at the stricter threshold;
staff are left out of the report and every analysis (rollup and raw alike) and shown in
their own presence report; an enrolment ends with its expiry, its removal or the person's
erasure."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from revisit.identity.index import FaissIndex
from revisit.identity.resolver import Resolver
from revisit.known.enrol import EnrolmentError, Enrolments
from revisit.known.presence import staff_presence
from revisit.records import Batch, Face, Frame, face_image_id
from revisit.report.query import ReportQuery
from revisit.store import summary as S
from revisit.store.base import SightingStore
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import at, batch, sighting
from revisit.tenancy.db import Tenancy

Q = ReportQuery(date(2024, 3, 1), date(2024, 3, 3))


def _report(store: SightingStore, rollup: bool = True) -> tuple[int, set[str]]:
    store.use_rollup = rollup  # type: ignore[attr-defined]
    try:
        return (store.report_header(Q).unique_visitors,
                {r.visitor_id for r in store.report_rows(Q)})
    finally:
        store.use_rollup = True  # type: ignore[attr-defined]


def test_staff_leave_the_reports_and_have_their_own(store: SightingStore) -> None:
    # V1 works at 101 all day; V2 and V3 are customers
    rows = [sighting("V-000001", at(m), "101") for m in range(0, 8 * 60, 20)]
    rows += [sighting("V-000002", at(30), "101"), sighting("V-000002", at(50, day=1), "101"),
             sighting("V-000003", at(90), "101")]
    store.write(batch(rows))
    assert _report(store) == (3, {"V-000001", "V-000002", "V-000003"})
    book = Enrolments(store, Tenancy(store))
    with pytest.raises(EnrolmentError, match="say why"):
        book.enrol_visitor("default", "staff", "V-000001", reason="")
    e = book.enrol_visitor("default", "staff", "V-000001", label="Anna (till)",
                           reason="works the tills; not a customer")
    assert store.staff("default") == ("V-000001",)
    for rollup in (True, False):
        assert _report(store, rollup) == (2, {"V-000002", "V-000003"})
    with store.read() as con:  # type: ignore[attr-defined]
        for rollup in (True, False):
            with S.sessionised(con, Q, rollup=rollup):
                t = S.totals(con, Q)
                d = S.dwell(con, Q, timedelta(seconds=15))
            assert (t["unique_visitors"], t["visits"], d["all"]["visits"]) == (2, 3, 3)
    (p,) = staff_presence(book, Q)
    assert (p["label"], p["location_id"], p["days_present"]) == ("Anna (till)", "101", 1)
    assert p["hours_present"] == pytest.approx((7 * 60 + 40 + 0.25) / 60, abs=0.01)
    # merged with another id, seen at the same times: that id is staff too, and the
    # person's hours are not counted twice
    store.write(batch([sighting("V-000004", at(m + 5), "101") for m in range(0, 8 * 60, 20)]))
    store.merge_visitors("default", "V-000001", "V-000004")
    assert _report(store)[0] == 2
    (p,) = staff_presence(book, Q)
    assert p["visits"] == 1 and p["hours_present"] == pytest.approx((7 * 60 + 45 + 0.25) / 60,
                                                                     abs=0.01)
    # ended: back in the reports
    book.remove("default", e.enrolment_id)
    assert _report(store)[0] == 3
    assert store.staff("default") == ()


def test_expiry_and_erasure_end_an_enrolment(store: SightingStore) -> None:
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(5))]))
    book = Enrolments(store, Tenancy(store))
    with pytest.raises(EnrolmentError, match="in the past"):  # it would never count
        book.enrol_visitor("default", "staff", "V-000001", reason="temp for the sale",
                           expires_at=datetime.now(UTC) - timedelta(minutes=1))
    book.enrol_visitor("default", "staff", "V-000001", reason="temp for the sale",
                       expires_at=datetime.now(UTC) + timedelta(seconds=0.5))
    assert store.staff("default") == ("V-000001",) and _report(store)[0] == 1
    time.sleep(0.6)
    assert store.staff("default") == () and _report(store)[0] == 2  # expired
    book.enrol_visitor("default", "staff", "V-000002", reason="security guard")
    assert _report(store)[0] == 1
    counts, _ = store.erase_visitor("default", "V-000002")
    assert counts["enrolments"] == 1 and book.list("default") == []


def _face(e: np.ndarray, image_id: str, minute: float, camera: str = "S1-C1") -> Face:
    bbox = (10, 20, 80, 100)
    return Face(tenant="default", camera_id=camera, location_id="S1", image_id=image_id,
                ts=datetime(2024, 3, 1, 10, tzinfo=UTC) + timedelta(minutes=minute),
                face_image_id=face_image_id("default", image_id, bbox), bbox=bbox,
                landmarks=np.zeros((5, 2), np.float32), det_score=0.9, quality=0.8,
                creatable=True, embedding=e, matchable=True)


def _near(cos: float, axis: int) -> np.ndarray:
    """A unit vector at cosine ``cos`` from the first axis, leaning along ``axis``."""
    v = np.zeros(16, np.float32)
    v[0], v[axis] = cos, np.sqrt(1 - cos**2)
    return v


def _resolve(resolver: Resolver, store: SightingStore, faces: list[Face]) -> dict[str, str]:
    """Resolve and store one batch of faces; image id -> visitor."""
    frames = {f.image_id: Frame("default", f.camera_id, f.location_id, f.image_id, f.ts)
              for f in faces}
    out = resolver.resolve(Batch(f"b{faces[0].image_id}", frames=list(frames.values()),
                                 faces=faces))
    store.write(out)
    return {s.image_id: s.face_id for s in out.sightings}


def test_joining_staff_needs_the_stricter_threshold(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(identity={"create_after": 1, "match_threshold": 0.5,
                                       "staff_margin": 0.1})
    store = DuckDBStore(":memory:")
    try:
        resolver = Resolver(settings, store, FaissIndex(16))
        anna = _near(1.0, 1)

        def run(faces: list[Face]) -> dict[str, str]:
            return _resolve(resolver, store, faces)

        staff = run([_face(anna, "enrol", 0)])["enrol"]
        Enrolments(store, Tenancy(store)).enrol_visitor("default", "staff", staff,
                                                        reason="works here")
        resolver.reload("default")
        # 0.55: enough for a customer (0.5), not for staff (0.6): someone else
        lookalike = run([_face(_near(0.55, 2), "lookalike", 60 * 24, "S1-C2")])
        assert lookalike["lookalike"] != staff
        # 0.7: Anna herself
        assert run([_face(_near(0.7, 3), "anna", 60 * 48, "S1-C3")])["anna"] == staff
    finally:
        store.close()


def test_an_expiry_past_the_calendar_is_refused(store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default")
    store.write(batch([sighting("V-000001", at(0))]))
    book = Enrolments(store, ten)
    for when in (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) + timedelta(hours=-1),
                 datetime.fromisoformat("9999-12-31T23:59:59-12:00"),
                 datetime.fromisoformat("0001-01-01T00:00:00+01:00")):
        with pytest.raises(EnrolmentError, match="out of range"):
            book.enrol_visitor("default", "staff", "V-000001", reason="till staff",
                               expires_at=when)
    assert book.list("default", include_expired=True) == []


def test_an_enrolments_exemplars_outlast_better_faces_and_the_retention(make_settings) -> None:  # type: ignore[no-untyped-def]
    """Marked as staff, a visitor's best exemplars become the enrolment's own: better camera
    faces of them (more than max_exemplars) and a retention purge of every camera exemplar
    leave those, so the person is still recognised as staff afterwards."""
    settings = make_settings(identity={"create_after": 1, "match_threshold": 0.5,
                                       "staff_margin": 0.1, "max_exemplars": 2})
    store = DuckDBStore(":memory:")
    try:
        resolver = Resolver(settings, store, FaissIndex(16))

        def run(faces: list[Face]) -> dict[str, str]:
            return _resolve(resolver, store, faces)

        def enrolment_exemplars() -> int:
            with store.read() as s:  # type: ignore[attr-defined]
                return s.execute("SELECT count(*) FROM exemplars WHERE face_image_id "
                                 "LIKE 'enrol-%'").fetchone()[0]

        anna = run([_face(_near(1.0, 1), "first", 0)])["first"]
        Enrolments(store, Tenancy(store)).enrol_visitor("default", "staff", anna,
                                                        reason="works here")
        resolver.sync_known("default")
        assert enrolment_exemplars() == 1
        for k in range(6):  # better snapshots of her, on other days: camera exemplars turn over
            better = _face(_near(0.9, 4 + k), f"later{k}", 60 * 24 * (k + 1), f"S1-C{k}")
            better.quality = 0.9 + k / 100
            assert run([better])[f"later{k}"] == anna
        assert enrolment_exemplars() == 1
        # retention takes every camera exemplar; hers as staff stays
        store.purge_before("default", datetime(2030, 1, 1))
        assert enrolment_exemplars() == 1
        resolver.reload("default")
        assert run([_face(_near(0.75, 3), "again", 60 * 24 * 30, "S1-C9")])["again"] == anna
    finally:
        store.close()


def test_staff_are_left_out_of_the_face_heatmap(store: SightingStore) -> None:
    rows = [sighting("V-000001", at(m), "101", camera="c1") for m in range(3)]
    rows.append(sighting("V-000002", at(1), "101", camera="c1"))
    store.write(batch(rows))
    span = (at(-1), at(10))

    def points() -> int:
        return sum(len(chunk) for chunk in store.face_positions("default", "c1", *span))

    assert points() == 4
    Enrolments(store, Tenancy(store)).enrol_visitor("default", "staff", "V-000001",
                                                    reason="works the tills")
    assert points() == 1


def test_ids_merged_with_staff_are_staff_and_leave_the_face_heatmap(store: SightingStore) -> None:
    # V1 (staff) absorbs V4: every id of the person is staff (face_positions filters raw ids)
    rows = [sighting("V-000001", at(m), "101", camera="c1") for m in range(3)]
    rows += [sighting("V-000004", at(m + 5), "101", camera="c1") for m in range(2)]
    rows.append(sighting("V-000002", at(1), "101", camera="c1"))
    store.write(batch(rows))
    Enrolments(store, Tenancy(store)).enrol_visitor("default", "staff", "V-000001",
                                                    reason="works the tills")
    store.merge_visitors("default", "V-000001", "V-000004")
    assert store.staff("default") == ("V-000001", "V-000004")
    span = (at(-1), at(10))
    assert sum(len(c) for c in store.face_positions("default", "c1", *span)) == 1  # V2's


def test_only_the_staff_group_leaves_the_reports(store: SightingStore) -> None:
    # a visitor enrolled in any other group is still a customer in every figure
    store.write(batch([sighting("V-000001", at(0), "101"), sighting("V-000002", at(5), "101")]))
    book = Enrolments(store, Tenancy(store))
    book.enrol_visitor("default", "vip", "V-000001", reason="loyalty tier gold")
    book.enrol_visitor("default", "regulars", "V-000002", reason="comes in every day")
    assert store.staff("default") == ()
    for rollup in (True, False):
        assert _report(store, rollup) == (2, {"V-000001", "V-000002"})
    with store.read() as con:  # type: ignore[attr-defined]
        assert S.totals(con, Q)["unique_visitors"] == 2
