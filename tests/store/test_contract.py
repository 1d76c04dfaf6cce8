"""Behaviour every sighting store backend must have (parametrised in conftest.py)."""

from __future__ import annotations

import ast
import threading
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

import revisit
from revisit.records import Batch
from revisit.report.query import ReportQuery, SightingQuery
from revisit.store.base import SightingStore
from revisit.store.testing import at, batch, sighting

DAY = date(2024, 3, 1)


def q(**kw) -> ReportQuery:
    kw.setdefault("start", DAY)
    kw.setdefault("end", DAY + timedelta(days=30))
    return ReportQuery(**kw)


def counts(store: SightingStore) -> dict[str, int]:
    return store.stats("default")


def test_protocol(store: SightingStore) -> None:
    assert isinstance(store, SightingStore)


# Called only by the distributed resolver, on the PostgresStore it insists on
_POSTGRES_RESOLVE_ONLY = {"prepare", "unforwarded", "forwarded"}


def _is_store(node: ast.expr) -> bool:
    """``store``, ``self.store``, ``runtime.store`` ... (not ``settings.store``)."""
    if isinstance(node, ast.Name):
        return node.id in ("store", "_store")
    return (isinstance(node, ast.Attribute) and node.attr in ("store", "_store")
            and not (isinstance(node.value, ast.Name) and node.value.id == "settings"))


def test_protocol_declares_what_callers_use() -> None:
    """Code outside the store package is written against SightingStore: every method it
    calls on a store is declared there."""
    declared = {name for name in dir(SightingStore) if not name.startswith("_")}
    root = Path(revisit.__file__).parent
    missing: dict[str, str] = {}
    for path in root.rglob("*.py"):
        if path.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and _is_store(node.value)
                    and node.attr not in declared | _POSTGRES_RESOLVE_ONLY):
                missing.setdefault(node.attr, str(path.relative_to(root)))
    assert not missing, f"used on a store but not in SightingStore: {missing}"


def test_write_then_read_back(store: SightingStore) -> None:
    s1 = sighting("V-000001", at(0), "L1")
    s2 = sighting("V-000002", at(5), "L2")
    store.write(batch([s1, s2]))
    assert store.known_frames("default", [s1.image_id, s2.image_id, "nope"]) == {
        s1.image_id, s2.image_id}
    assert store.existing_sightings("default", [s1.face_image_id, "F-x"]) == {
        s1.face_image_id: "V-000001"}
    assert store.tenants() == ["default"]
    assert store.max_visitor_number("default") == 2
    c = counts(store)
    assert (c["frames"], c["sightings"], c["visitors"], c["exemplars"], c["embeddings"]) == (
        2, 2, 2, 2, 2)
    assert (c["cameras"], c["locations"]) == (2, 2)
    exported = list(store.sightings(SightingQuery()))
    assert [e["face_image_id"] for e in exported] == [s1.face_image_id, s2.face_image_id]
    assert exported[0]["ts"] == "2024-03-01T09:00:00Z"
    assert exported[0]["bbox_w"] == 64 and exported[0]["quality"] == 0.9


def test_same_batch_twice_changes_nothing(store: SightingStore) -> None:
    b = batch([sighting("V-000001", at(i * 10)) for i in range(5)])
    store.write(b)
    first = counts(store)
    header = store.report_header(q())
    store.write(b)
    assert counts(store) == first
    assert store.report_header(q()) == header


def test_redelivered_batch_does_not_resurrect_dropped_exemplar(store: SightingStore) -> None:
    s = sighting("V-000001", at(0))
    b1 = batch([s])
    store.write(b1)
    store.write(Batch("drop", exemplars_dropped=[("default", s.face_image_id)]))
    assert counts(store)["exemplars"] == 0
    store.write(b1)  # replayed by the queue after the drop
    assert counts(store)["exemplars"] == 0


def test_sighting_already_stored_keeps_first_assignment(store: SightingStore) -> None:
    s = sighting("V-000001", at(0))
    store.write(batch([s]))
    again = sighting("V-000009", at(0), image_id=s.image_id)  # same face, other visitor
    assert again.face_image_id == s.face_image_id
    store.write(batch([again], exemplars=False))
    assert store.existing_sightings("default", [s.face_image_id]) == {s.face_image_id: "V-000001"}


def test_frames_without_faces_are_marked_processed(store: SightingStore) -> None:
    from revisit.records import Frame

    fr = Frame("default", "c9", "L9", "empty-frame", at(0))
    store.write(Batch("b", frames=[fr]))
    assert store.known_frames("default", ["empty-frame"]) == {"empty-frame"}
    assert counts(store)["sightings"] == 0
    assert counts(store)["locations"] == 1


def test_failed_write_leaves_nothing(store: SightingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    good = batch([sighting("V-000001", at(0))])
    store.write(good)
    before = counts(store)
    bad = batch([sighting("V-000002", at(1)), sighting("V-000003", at(2), "L7")])
    hook = next((n for n in ("_write_exemplars", "_write_visitors") if hasattr(store, n)), None)
    if hook is None:
        pytest.skip("backend exposes no write step to break")

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, hook, boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write(bad)
    monkeypatch.undo()
    assert counts(store) == before
    assert store.known_frames("default", [f.image_id for f in bad.frames]) == set()
    assert store.max_visitor_number("default") == 1
    store.write(bad)  # and the store still works afterwards
    assert counts(store)["sightings"] == 3


def test_failed_write_from_bad_record_leaves_nothing(store: SightingStore) -> None:
    ok = sighting("V-000001", at(0))
    broken = sighting("V-000002", at(1))
    broken.bbox = ("not", "an", "int", "box")  # fails mid-write, after frames went in
    with pytest.raises(Exception):  # noqa: B017 - any backend error
        store.write(batch([ok, broken]))
    assert counts(store)["frames"] == 0 and counts(store)["sightings"] == 0


def test_persists_across_reopen(store_factory) -> None:
    s = store_factory()
    s.write(batch([sighting("V-00000A", at(0))]))
    s.close()
    s = store_factory()
    try:
        assert s.max_visitor_number("default") == 10
        assert counts(s)["sightings"] == 1
    finally:
        s.close()


def test_tenants_are_isolated(store: SightingStore) -> None:
    store.write(batch([sighting("V-000001", at(0), tenant="acme")]))
    store.write(batch([sighting("V-000005", at(0), tenant="beta")]))
    assert store.tenants() == ["acme", "beta"]
    assert store.max_visitor_number("acme") == 1
    assert store.max_visitor_number("beta") == 5
    assert store.report_header(q(tenant="acme")).unique_visitors == 1
    assert store.report_header(q()).unique_visitors == 0


def test_load_exemplars_in_chunks(store: SightingStore) -> None:
    ss = [sighting(f"V-{i:06X}", at(i)) for i in range(1, 26)]
    store.write(batch(ss))
    chunks = list(store.load_exemplars("default", chunk=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    got = {e.face_image_id: e for c in chunks for e in c}
    s = ss[3]
    np.testing.assert_allclose(got[s.face_image_id].embedding, s.embedding, rtol=1e-6)
    assert got[s.face_image_id].visitor_id == s.face_id
    assert got[s.face_image_id].ts == s.ts


def test_merge_split_and_exemplars_read_canonical(store: SightingStore) -> None:
    a, b = sighting("V-000001", at(0)), sighting("V-000002", at(100))
    store.write(batch([a, b]))
    rec = store.merge_visitors("default", "V-000001", "V-000002", reason="same person")
    assert (rec.keep, rec.absorb) == ("V-000001", "V-000002")
    assert store.canonical_id("default", "V-000002") == "V-000001"
    ex = [e for c in store.load_exemplars("default") for e in c]
    assert {e.visitor_id for e in ex} == {"V-000001"}
    assert store.existing_sightings("default", [b.face_image_id]) == {b.face_image_id: "V-000001"}
    with pytest.raises(ValueError):
        store.merge_visitors("default", "V-000002", "V-000001")  # already one visitor
    with pytest.raises(KeyError):
        store.merge_visitors("default", "V-000001", "V-0000FF")
    split = store.split_visitor("default", "V-000002")
    assert split.split_at is not None
    assert store.canonical_id("default", "V-000002") == "V-000002"
    with pytest.raises(ValueError):
        store.split_visitor("default", "V-000002")
    assert [m.split_at is not None for m in store.merges("default")] == [True]


def test_merge_chain_split_restores_each_step(store: SightingStore) -> None:
    ss = [sighting(f"V-00000{i}", at(i * 60)) for i in range(1, 5)]
    store.write(batch(ss))
    store.merge_visitors("default", "V-000002", "V-000003")  # 3 -> 2
    store.merge_visitors("default", "V-000001", "V-000002")  # 2 (and 3) -> 1
    assert store.canonical_id("default", "V-000003") == "V-000001"  # one hop, re-pointed
    store.merge_visitors("default", "V-000004", "V-000001")  # everything -> 4
    assert store.report_header(q()).unique_visitors == 1
    store.split_visitor("default", "V-000002")  # 2 leaves with 3, which followed it
    assert store.canonical_id("default", "V-000003") == "V-000002"
    assert store.canonical_id("default", "V-000001") == "V-000004"
    store.split_visitor("default", "V-000001")  # 1 leaves 4; 3 stays with 2
    assert store.canonical_id("default", "V-000003") == "V-000002"
    assert store.report_header(q()).unique_visitors == 3
    store.split_visitor("default", "V-000003")
    assert store.report_header(q()).unique_visitors == 4


def test_live_visitors_follow_merges_and_erasure_in_one_read(store: SightingStore) -> None:
    store.write(batch([sighting(f"V-00000{i}", at(i * 60)) for i in range(1, 5)]))
    store.merge_visitors("default", "V-000002", "V-000003")
    store.merge_visitors("default", "V-000001", "V-000002")  # 2 and 3 read as 1
    store.erase_visitor("default", "V-000004")
    assert store.live_visitors("default", ["V-000003", "V-000002", "V-000004", "V-000009",
                                           "V-000001", "V-000003"]) == {
        "V-000001": "V-000001", "V-000002": "V-000001", "V-000003": "V-000001",
        "V-000004": None,  # erased
        "V-000009": None,  # never stored
    }
    assert store.live_visitors("other-tenant", ["V-000001"]) == {"V-000001": None}
    assert store.live_visitors("default", []) == {}


def test_split_of_canonical_id_names_what_was_merged(store: SightingStore) -> None:
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(1))]))
    store.merge_visitors("default", "V-000001", "V-000002")
    with pytest.raises(ValueError, match="V-000002"):
        store.split_visitor("default", "V-000001")


def test_erase_removes_visitor_everywhere(store: SightingStore) -> None:
    keep = sighting("V-000001", at(0))
    gone = [sighting("V-000002", at(i * 45), "L2") for i in range(3)]
    absorbed = sighting("V-000003", at(500), "L3")
    b = batch([keep, *gone, absorbed])
    store.write(b)
    store.merge_visitors("default", "V-000002", "V-000003")
    # the faces whose crops go with the person: the whole merge group, on every store
    assert store.visitor_face_ids("default", "V-000003") == {
        s.face_image_id for s in [*gone, absorbed]}
    deleted, exemplars = store.erase_visitor("default", "V-000003")  # any id of the group
    assert deleted["sightings"] == 4 and deleted["visitors"] == 2
    assert set(exemplars) == {s.face_image_id for s in [*gone, absorbed]}
    c = counts(store)
    assert (c["sightings"], c["embeddings"], c["exemplars"], c["visitors"], c["aliases"]) == (
        1, 1, 1, 1, 0)
    assert store.visitor_detail("default", "V-000002") is None
    assert {r.visitor_id for r in store.report_rows(q())} == {"V-000001"}
    assert all(s["face_id"] == "V-000001" for s in store.sightings(SightingQuery()))
    assert all(e.visitor_id == "V-000001" for ch in store.load_exemplars("default") for e in ch)
    assert store.merges("default") == []
    store.write(b)  # a redelivered batch must not bring the person back
    assert counts(store)["sightings"] == 1 and counts(store)["visitors"] == 1
    assert store.max_visitor_number("default") == 3  # erased ids are never reissued
    with pytest.raises(KeyError):
        store.erase_visitor("default", "V-000002")


def test_visitor_detail(store: SightingStore) -> None:
    store.write(batch([
        sighting("V-000001", at(0), "L1", quality=0.5),
        sighting("V-000001", at(60), "L2", quality=0.7),
        sighting("V-000002", at(90), "L2", quality=0.9),
    ]))
    store.merge_visitors("default", "V-000001", "V-000002")
    d = store.visitor_detail("default", "V-000002")
    assert d is not None
    assert d.visitor_id == "V-000001" and d.aliases == ("V-000002",)
    assert d.sightings == 3 and d.locations == {"L1": 1, "L2": 2}
    assert d.first_seen == at(0) and d.last_seen == at(90)
    assert d.exemplars == 3
    assert d.exemplar_quality_max == pytest.approx(0.9)
    assert d.exemplar_quality_mean == pytest.approx(0.7)
    assert store.visitor_detail("default", "V-0000AA") is None


def test_load_embeddings(store: SightingStore) -> None:
    ss = [sighting("V-000001", at(0)), sighting("V-000002", at(1), with_embedding=False)]
    store.write(batch(ss))
    rows = [r for c in store.load_embeddings("default") for r in c]
    assert [(r[0], r[1]) for r in rows] == [(ss[0].face_image_id, "V-000001")]


def test_reads_while_another_thread_writes(store: SightingStore) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(30):
                store.write(batch([sighting(f"V-{i + 1:06X}", at(i))]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    while t.is_alive():
        seen = max(seen, store.report_header(q()).total_sightings)
        list(store.report_rows(q()))
    t.join()
    assert not errors
    assert store.report_header(q()).total_sightings == 30


@pytest.mark.parametrize("gap", [None, timedelta(minutes=5)], ids=["rollup", "raw"])
def test_a_reports_header_and_rows_are_one_read(
    store: SightingStore, monkeypatch: pytest.MonkeyPatch, gap: timedelta | None
) -> None:
    """A visitor written while a report is read is in both its header and its rows or in
    neither (a page's total and its rows were two reads: 2 visitors, 3 rows)."""
    query = q() if gap is None else q(visit_gap=gap)
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000001", at(90)),
                       sighting("V-000002", at(1), "L2")]))
    engine = store.engine  # type: ignore[attr-defined]
    stream = engine.stream

    def arriving(*args: object, **kwargs: object) -> object:  # just before the report's query
        store.write(batch([sighting("V-000003", at(2))]))
        monkeypatch.setattr(engine, "stream", stream)
        return stream(*args, **kwargs)

    monkeypatch.setattr(engine, "stream", arriving)
    header, rows = store.report(query)
    listed = list(rows)
    assert header.unique_visitors == len(listed) == 3
    assert header.total_visits == sum(r.total_appearances for r in listed) == 4
    assert header.total_sightings == sum(r.sightings for r in listed) == 4


def test_a_report_read_at_once_is_its_header_and_rows(store: SightingStore) -> None:
    """``report`` answers as ``report_header`` and ``report_rows`` do, through the rollup,
    the raw query, a camera filter, merged visitors, and with nobody in the period."""
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(1), "L2"),
                       sighting("V-000003", at(2, day=1)), sighting("V-000001", at(0, day=1)),
                       sighting("V-000003", at(45, day=1), "L2")]))
    store.merge_visitors("default", "V-000001", "V-000003")
    for query in (q(), q(visit_gap=timedelta(minutes=5)), q(cameras=("L1-cam1",)),
                  q(start=DAY - timedelta(days=9), end=DAY - timedelta(days=8))):
        header, rows = store.report(query)
        assert header == store.report_header(query)
        assert list(rows) == list(store.report_rows(query))


def test_duplicates_inside_one_batch(store: SightingStore) -> None:
    x = sighting("V-000001", at(0))
    b = batch([x, x])
    b.frames = b.frames * 2
    b.exemplars_added = b.exemplars_added * 2
    store.write(b)
    c = counts(store)
    assert (c["frames"], c["sightings"], c["exemplars"], c["visitors"]) == (1, 1, 1, 1)


def test_visitor_seen_span_widens_only(store: SightingStore) -> None:
    store.write(batch([sighting("V-000001", at(60))]))
    store.write(batch([sighting("V-000001", at(0))], exemplars=False))
    store.write(batch([sighting("V-000001", at(30))], exemplars=False))
    d = store.visitor_detail("default", "V-000001")
    assert d is not None and (d.first_seen, d.last_seen, d.sightings) == (at(0), at(60), 3)


def test_a_read_past_its_time_budget_is_stopped(store: SightingStore) -> None:
    """The service's per-request budget: a runaway query ends with QueryTimeout well
    before it would finish, and the store answers the next read normally."""
    import time

    from revisit.store.base import QueryTimeout, time_budget

    slow = ("SELECT count(*) FROM generate_series(1, 3000000000) a"
            if "Postgres" in type(store).__name__
            else "SELECT count(*) FROM range(30000000000) a WHERE a.range % 7 = 3")
    t0 = time.monotonic()
    with pytest.raises(QueryTimeout), time_budget(0.5), store.read() as s:
        s.execute(slow).fetchall()
    assert time.monotonic() - t0 < 10
    with time_budget(30), store.read() as s:
        assert s.execute("SELECT 1").fetchall()[0][0] == 1
    assert counts(store)["sightings"] == 0


def _face(image_id: str, ts, tenant: str = "default", camera: str = "L1-cam1"):
    from revisit.records import Face, face_image_id
    from revisit.store.testing import embedding

    bbox = (10, 20, 64, 80)
    return Face(tenant=tenant, camera_id=camera, location_id="L1", image_id=image_id, ts=ts,
                face_image_id=face_image_id(tenant, image_id, bbox), bbox=bbox,
                landmarks=np.arange(10, dtype=np.float32).reshape(5, 2), det_score=0.8,
                quality=0.4, creatable=False, embedding=embedding(len(image_id)),
                pose=(30.0, -5.0, 2.0), context=np.full(4, 0.25, np.float32), sharpness=12.5)


def test_held_faces_are_kept_until_released(store: SightingStore) -> None:
    a, b = _face("h1", at(0)), _face("h2", at(1))
    other = _face("h3", at(0), tenant="other")
    store.write(Batch("B-held", held=[a, b, other]))
    store.write(Batch("B-held", held=[a, b, other]))  # redelivered: still one row each
    back = store.held_faces("default")
    assert [f.face_image_id for f in back] == [a.face_image_id, b.face_image_id]
    assert back[0].embedding is not None and np.array_equal(back[0].embedding, a.embedding)
    assert np.array_equal(back[0].landmarks, a.landmarks) and back[0].pose == a.pose
    assert (back[0].creatable, back[0].quality, back[0].sharpness, back[0].ts) == (
        False, 0.4, 12.5, a.ts)
    assert store.held_tenants() == ["default", "other"]
    # only tenants none of whose held faces was written after the given moment
    from revisit.store.sql_store import now_utc

    assert store.held_tenants(now_utc() - timedelta(hours=1)) == []
    assert store.held_tenants(now_utc() + timedelta(seconds=1)) == ["default", "other"]
    # decided by a later batch: gone with it, the other tenant's untouched
    s = sighting("V-000001", a.ts)
    done = batch([s])
    done.released = [("default", a.face_image_id)]
    store.write(done)
    assert [f.face_image_id for f in store.held_faces("default")] == [b.face_image_id]
    assert len(store.held_faces("other")) == 1
    # retention takes held faces older than the cutoff
    from revisit.store.report_sql import naive_utc

    counts, _ = store.purge_before("default", naive_utc(at(2)))
    assert counts["held_faces"] == 1 and store.held_faces("default") == []
    assert len(store.held_faces("other")) == 1


def test_open_tracks_are_read_back_once_and_go_with_erasure_and_retention(
        store: SightingStore) -> None:
    """Tracks a stop saved open: replaced per tenant, deleted once read back (a batch
    clearing them), and biometric like held faces: erasure takes the person's (and a
    reflection of them), retention those begun before the cutoff."""
    from revisit.records import SavedTrack
    from revisit.store.report_sql import naive_utc

    def track(key: int, vid: str | None, first: int, tenant: str = "default",
              twin: str | None = None) -> SavedTrack:
        return SavedTrack(tenant, "L1-cam1", key, vid, twin, at(first), at(first + 1),
                          ("F-1",), b'{"held": ["F-1"]}')

    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(1))]))
    store.write(Batch("stop-1", tracks_saved=[track(0, "V-000009", 0)]))
    saved = [track(1, "V-000001", 0), track(2, None, 5, twin="V-000001"),
             track(3, "V-000002", 5), track(4, None, 5)]
    store.write(Batch("stop-2", tracks_saved=[*saved, track(0, None, 0, tenant="other")]))
    back = store.open_tracks("default")
    assert [t.key for t in back] == [1, 2, 3, 4]  # the earlier stop's replaced
    assert (back[0].visitor_id, back[0].first_ts, back[0].held, back[0].state) == (
        "V-000001", at(0), ("F-1",), saved[0].state)
    counts, _ = store.erase_visitor("default", "V-000001")
    assert counts["open_tracks"] == 2
    assert [t.key for t in store.open_tracks("default")] == [3, 4]
    counts, _ = store.purge_before("default", naive_utc(at(3)))
    assert counts["open_tracks"] == 0
    counts, _ = store.purge_before("default", naive_utc(at(6)))
    assert counts["open_tracks"] == 2 and store.open_tracks("default") == []
    assert len(store.open_tracks("other")) == 1
    store.write(Batch("start", tracks_cleared=["other"]))
    assert store.open_tracks("other") == []


def test_face_crops_go_with_erasure_and_retention(store: SightingStore) -> None:
    """Crops are rows: kept with the batch, read back per visitor (merged ids too), gone
    with the visitor's erasure and with retention; a face of an erased person keeps none."""
    from dataclasses import replace

    from revisit.store.report_sql import naive_utc

    crop = np.full((112, 112, 3), 127, np.uint8)
    s1, s2, s3 = (sighting("V-000001", at(0)), sighting("V-000002", at(1)),
                  sighting("V-000003", at(3)))
    b = batch([s1, s2, s3])
    b.faces = [replace(_face(x.image_id, x.ts), crop=crop) for x in (s1, s2, s3)]
    assert [f.face_image_id for f in b.faces] == [x.face_image_id for x in (s1, s2, s3)]
    store.write(b)
    store.write(b)  # redelivered: one crop per face
    assert store.stats("default")["face_crops"] == 3
    store.merge_visitors("default", "V-000001", "V-000002")
    kept = store.visitor_crops("default", "V-000002")
    assert [(f, ts) for f, ts, _ in kept] == [(s1.face_image_id, s1.ts), (s2.face_image_id, s2.ts)]
    assert kept[0][2][:2] == b"\xff\xd8"  # JPEG
    counts, _ = store.erase_visitor("default", "V-000001")
    assert counts["crops"] == 2 and store.visitor_crops("default", "V-000003") != []
    # a late copy of the erased person's face brings back neither sighting nor crop
    store.write(b)
    assert store.stats("default")["face_crops"] == 1
    counts, _ = store.purge_before("default", naive_utc(at(4)))
    assert counts["crops"] == 1 and store.stats("default")["face_crops"] == 0


def test_only_faces_that_are_sightings_or_held_keep_a_crop(store: SightingStore) -> None:
    """A face dropped at once keeps no crop; a held face keeps one until it is dropped (a
    reflection of someone, say), so every crop is reachable through a sighting."""
    from dataclasses import replace

    crop = np.full((112, 112, 3), 127, np.uint8)
    dropped, held = (replace(_face(i, at(n)), crop=crop) for n, i in enumerate(("d1", "h1")))
    store.write(Batch("B-1", faces=[dropped, held], held=[held]))
    assert store.stats("default")["face_crops"] == 1
    store.write(Batch("B-2", released=[("default", held.face_image_id)]))  # dropped later
    assert store.stats("default")["face_crops"] == 0


def test_a_held_face_released_to_an_erased_visitor_keeps_no_crop(store: SightingStore) -> None:
    """The person was erased while the batch deciding their held face was on its way: the
    sighting is not stored, and neither is the held face's crop left behind ownerless."""
    from dataclasses import replace

    crop = np.full((112, 112, 3), 127, np.uint8)
    held = replace(_face("h1", at(0)), crop=crop)
    store.write(Batch("B-1", faces=[held], held=[held]))
    store.write(batch([sighting("V-000001", at(1))]))
    store.erase_visitor("default", "V-000001")
    late = replace(sighting("V-000001", at(0), image_id="h1"),
                   face_image_id=held.face_image_id)
    store.write(Batch("B-2", sightings=[late], released=[("default", held.face_image_id)]))
    assert store.stats("default")["face_crops"] == 0
    assert store.stats("default")["sightings"] == 0


def test_one_face_twice_in_a_batch_is_one_sighting(store: SightingStore) -> None:
    """As on DuckDB, whose key is the face alone: PostgreSQL's key holds the time too."""
    from dataclasses import replace

    first = sighting("V-000001", at(0))
    again = replace(first, ts=at(5))
    store.write(batch([first, again]))
    assert store.stats("default")["sightings"] == 1
