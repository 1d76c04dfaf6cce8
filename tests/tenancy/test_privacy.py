"""Erasure and retention are exact: every table, the face index, the running resolver's
memory and what was derived from the deleted rows (alerts, audit details, merge records,
first/last seen) go with the person; nothing of another tenant is touched."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np
import pytest
from tests.receivers import NoDelivery

from revisit.config import load_settings
from revisit.config.index_url import AnnOptions
from revisit.identity.ann_index import FaissAnnIndex
from revisit.identity.index import FaissIndex
from revisit.identity.resolver import Resolver
from revisit.known.enrol import Enrolments
from revisit.known.watchlist import Watchlist, WatchlistSettings, WatchlistWatcher
from revisit.occupancy.alerts import AlertBook
from revisit.records import Batch, Exemplar, Face, Frame, face_image_id
from revisit.store.base import SightingStore
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import at, batch, sighting
from revisit.tenancy.db import Tenancy, TenancyError
from revisit.tenancy.privacy import erase_visitor, purge_tenant

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def rows(store: SightingStore, sql: str, *params: object) -> list[tuple]:
    with store.read() as s:  # type: ignore[attr-defined]
        return [tuple(r) for r in s.execute(sql, list(params)).fetchall()]


def test_erase_takes_watchlist_alerts_and_audit_details(store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default")
    Watchlist(store, ten).set("default", WatchlistSettings(
        enabled=True, purpose="loss prevention, tested"), "admin")
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(0))]))
    book = Enrolments(store, ten)
    book.enrol_visitor("default", "watchlist", "V-000001", label="Jane Doe", reason="tested")
    book.enrol_visitor("default", "watchlist", "V-000002", label="John Roe", reason="tested")
    watcher = WatchlistWatcher(store, NoDelivery(), ttl_s=0)
    assert len(watcher.after([sighting("V-000001", at(1)), sighting("V-000002", at(1))])) == 2
    alerts = AlertBook(store)
    for (alert_id,) in rows(store, "SELECT alert_id FROM alerts"):
        alerts.log_delivery("default", alert_id, "webhook", "https://example.test", 1, True, "200")

    counts = erase_visitor(store, None, ten, "default", "V-000001", "admin")

    assert counts["alerts"] == 1 and counts["alert_deliveries"] == 1
    assert rows(store, "SELECT subject FROM alerts") == [("V-000002",)]
    assert len(rows(store, "SELECT alert_id FROM alert_deliveries")) == 1
    audit = " ".join(r[0] for r in rows(store, "SELECT detail FROM tenancy_audit"))
    assert "Jane" not in audit  # the label, the alert's place and time: gone
    assert "John Roe" in audit  # the other person's entries are untouched
    erased = [a["detail"] for a in ten.audit_log("default")
              if a["action"] in ("known.enrol", "watchlist.alert")
              and a["detail"].get("visitor_id") == "V-000001"]
    assert len(erased) == 2 and all(d.get("erased") is True and "label" not in d
                                    for d in erased)


def test_purge_takes_what_was_derived_from_old_rows(store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default", retention_days=30)
    now = at(0, day=100).replace(tzinfo=UTC)
    old, recent = at(0), at(0, day=99)
    store.write(batch([sighting("V-000010", old), sighting("V-000011", old),
                       sighting("V-000011", recent), sighting("V-000020", old),
                       sighting("V-000021", old)]))
    store.merge_visitors("default", "V-000011", "V-000010", reason="same person")
    store.merge_visitors("default", "V-000021", "V-000020", reason="same person")
    with store.transaction() as s:  # type: ignore[attr-defined]
        s.execute("INSERT INTO alerts (tenant, alert_id, rule_id, location_id, zone, value, "
                  "message, started_at, ended_at) VALUES ('default', 'a1', 'r1', 'L1', '', 1, "
                  "'m', ?, ?)", [old.replace(tzinfo=None), old.replace(tzinfo=None)])
    AlertBook(store).log_delivery("default", "a1", "webhook", "https://example.test", 1, True,
                                  "200")

    counts = purge_tenant(store, None, ten, "default", "test", now=now)

    assert counts["alerts"] == 1 and counts["alert_deliveries"] == 1
    assert rows(store, "SELECT count(*) FROM alert_deliveries") == [(0,)]
    # the group that aged out leaves no alias or merge record; the living one keeps its
    # canonical row, whose first sighting is now the recent one
    assert rows(store, "SELECT visitor_id FROM visitors ORDER BY 1") == [("V-000011",)]
    assert rows(store, "SELECT alias_id FROM aliases") == []
    assert rows(store, "SELECT absorb_id FROM merge_log") == []
    first, last, created = rows(store, "SELECT first_seen, last_seen, created_at "
                                       "FROM visitors")[0]
    cutoff = (now - timedelta(days=30)).replace(tzinfo=None)
    assert first == last == recent.replace(tzinfo=None) and created >= cutoff


def test_purge_ends_expired_enrolments(store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default", retention_days=30)

    def embed(b: Batch) -> Batch:
        for i, fr in enumerate(b.frames):
            v = np.random.default_rng(i).standard_normal(128).astype(np.float32)
            bbox = (0, 0, 90, 90)
            b.faces.append(Face(fr.tenant, fr.camera_id, fr.location_id, fr.image_id, fr.ts,
                                face_image_id(fr.tenant, fr.image_id, bbox), bbox,
                                np.zeros((5, 2), np.float32), 0.9, 0.9, True, None,
                                v / np.linalg.norm(v)))
        return b

    today = datetime.now(UTC)
    now = today + timedelta(days=10)  # the purge runs ten days from now
    book = Enrolments(store, ten)
    gone = book.enrol_photos("default", "staff", [b"a", b"b"], label="Anna", reason="staff",
                             expires_at=today + timedelta(days=1), process=embed)
    kept = book.enrol_photos("default", "staff", [b"c"], label="Ben", reason="staff",
                             expires_at=now + timedelta(days=1), process=embed)
    index = FaissIndex(128)
    for chunk in store.load_exemplars("default"):
        index.add(chunk)
    assert index.size("default") == 3

    counts = purge_tenant(store, index, ten, "default", "test", now=now)

    assert counts["enrolments_expired"] == 1
    assert [e.enrolment_id for e in book.list("default", include_expired=True)] == [kept.enrolment_id]
    left = [ex.face_image_id for ch in store.load_exemplars("default") for ex in ch]
    assert left and all(f.startswith(f"enrol-{kept.enrolment_id}-") for f in left)
    assert index.size("default") == 1
    assert gone.visitor_id not in store.staff("default")
    log = ten.audit_log("default", 100)
    assert "Anna" not in str(log) and "Ben" in str(log)  # the ended one's label goes
    assert any(r["action"] == "known.enrol" and gone.enrolment_id in str(r) for r in log)


def test_skipped_batches_match_tenant_ids_exactly(store: SightingStore) -> None:
    with store.transaction() as s:  # type: ignore[attr-defined]
        s.execute("INSERT INTO resolve_skipped (stream, seq, tenants, reason, skipped_at) "
                  "VALUES ('s1', 1, 'shopXa', 'gap', ?)", [datetime(2024, 3, 1)])
    assert store.skipped_batches("shop_a") == []
    assert [r["tenants"] for r in store.skipped_batches("shopXa")] == ["shopXa"]


# -- the running resolver and the index (embedded DuckDB + faiss) ---------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class _Scene:
    def __init__(self) -> None:
        self.settings = load_settings(None, data=Path(tempfile.mkdtemp()))
        self.store = DuckDBStore(":memory:")
        self.tenancy = Tenancy(self.store)
        self.tenancy.create_tenant("t")
        self.index = FaissIndex(128)
        self.resolver = Resolver(self.settings, self.store, self.index)
        self.rng = np.random.default_rng(0)

    def see(self, person: np.ndarray, image_id: str, minutes: float, camera: str = "C1"
            ) -> Batch:
        bbox = (100, 20, 80, 100)
        face = Face(tenant="t", camera_id=camera, location_id="S1", image_id=image_id,
                    ts=T0 + timedelta(minutes=minutes),
                    face_image_id=face_image_id("t", image_id, bbox), bbox=bbox,
                    landmarks=np.zeros((5, 2), np.float32), det_score=0.9, quality=0.8,
                    creatable=True,
                    embedding=_unit(person + self.rng.normal(size=128) * 0.01),
                    matchable=True)
        out = self.resolver.resolve(Batch("b-" + image_id, frames=[
            Frame("t", camera, "S1", image_id, face.ts)], faces=[face]))
        self.store.write(out)
        return out


def test_erasure_reaches_the_running_resolver() -> None:
    sc = _Scene()
    person = _unit(sc.rng.normal(size=128))
    for k in range(3):
        sc.see(person, f"a{k}", k * 0.1)
    (vid,) = sc.resolver._galleries["t"].exemplars
    erase_visitor(sc.store, sc.index, sc.tenancy, "t", vid, "admin", resolver=sc.resolver)
    assert sc.resolver._galleries["t"].exemplars == {} and sc.index.size("t") == 0
    # the same person seconds later, on the same camera's open track: a new visitor, stored
    seen = [s.face_id for k in range(3, 6) for s in sc.see(person, f"a{k}", k * 0.1).sightings]
    tail = sc.resolver.flush()
    if tail is not None:
        sc.store.write(tail)
        seen += [s.face_id for s in tail.sightings]
    assert len(seen) == 3 and vid not in seen
    assert sc.store.stats("t")["sightings"] == 3


def _two_people() -> tuple[_Scene, tuple[np.ndarray, str], tuple[np.ndarray, str]]:
    """A scene where a (camera C1) and b (C2) were seen three times each: (face, id)."""
    sc = _Scene()
    a, b = _unit(sc.rng.normal(size=128)), _unit(sc.rng.normal(size=128))
    for k in range(3):
        sc.see(a, f"a{k}", k * 0.1, "C1")
        sc.see(b, f"b{k}", k * 0.1, "C2")
    va, vb = sorted(sc.resolver._galleries["t"].exemplars)
    return sc, (a, va), (b, vb)


def test_erasure_after_merge_and_split_leaves_nothing_under_the_other_id() -> None:
    sc, (a, va), (_, vb) = _two_people()
    sc.store.merge_visitors("t", vb, va, reason="wrong merge")
    sc.resolver.reload("t")  # the index now holds a's exemplars under b's id
    sc.store.split_visitor("t", va)
    erase_visitor(sc.store, sc.index, sc.tenancy, "t", va, "admin", resolver=sc.resolver)
    held = {h.face_image_id for hs in sc.resolver._galleries["t"].exemplars.values() for h in hs}
    a_faces = {face_image_id("t", f"a{k}", (100, 20, 80, 100)) for k in range(3)}
    assert not a_faces & held and not a_faces & set(sc.index._tenants["t"].by_face)
    out = sc.see(a, "a-later", 120, "C1")  # two hours later: not taken for b
    assert vb not in [s.face_id for s in out.sightings]


def _count_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every rebuild of an approximate index's main tier from here on (its size)."""
    calls: list[int] = []
    rebuild = FaissAnnIndex._rebuild_main

    def counted(self: FaissAnnIndex, t: object) -> None:
        calls.append(len(t.main_ids))  # type: ignore[attr-defined]
        rebuild(self, t)

    monkeypatch.setattr(FaissAnnIndex, "_rebuild_main", counted)
    return calls


def _held_in_main(index: FaissAnnIndex, tenant: str) -> np.ndarray:
    """Every full vector the main tier still holds (HNSW storage, PQ refine vectors,
    IVF's copy, and IVF's quantised codes at the positions its lists still list)."""
    t = index._tenants[tenant]
    if t.main_vecs is None:
        return t.main.reconstruct_n(0, t.main.ntotal)
    lists = t.main.invlists
    listed = [int(i) for j in range(t.main.nlist)
              for i in faiss.rev_swig_ptr(lists.get_ids(j), lists.list_size(j))]
    t.main.set_direct_map_type(faiss.DirectMap.Hashtable)  # one that removals keep
    return np.concatenate([t.main_vecs, np.stack([t.main.reconstruct(i) for i in listed])])


@pytest.mark.parametrize("kind", ["pq", "hnsw", "ivf"])
def test_ann_index_compact_leaves_no_removed_vector(kind: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Removal marks; compact leaves no copy of a removed vector in memory and no search
    finds it, without rebuilding (erasure calls it every time)."""
    index = FaissAnnIndex(16, AnnOptions(kind=kind, flush=8, min_main=8, nlist=2, nprobe=2,
                                         pq_m=4))
    rng = np.random.default_rng(1)
    vecs = [_unit(rng.normal(size=16)) for _ in range(40)]
    index.add([Exemplar("t", f"V-{i:06d}", f"F-{i}", v, 0.9, T0) for i, v in enumerate(vecs)])
    rebuilds = _count_rebuilds(monkeypatch)
    index.remove("t", ["F-0", "F-1"])
    t = index._tenants["t"]
    assert t.dead and np.isclose(_held_in_main(index, "t") @ vecs[0], 1.0, atol=1e-3).any()
    index.compact("t")
    assert rebuilds == [] and t.main is not None and index.size("t") == 38
    assert not np.isclose(_held_in_main(index, "t") @ np.stack(vecs[:2]).T, 1.0, atol=1e-3).any()
    if t.main_base is not None:  # PQ: the 4-bit codes go too
        assert t.main_base.ntotal == len(t.main_ids) == 38
    hits = index.search("t", np.stack(vecs[:3]), 40)
    assert not {h.face_image_id for row in hits for h in row} & {"F-0", "F-1"}
    assert hits[2][0].face_image_id == "F-2"
    index.remove("t", [f"F-{i}" for i in range(2, 36)])  # under min_main: exact again
    assert len(rebuilds) == 1 and t.main is None and index.size("t") == 4
    assert t.recent.ntotal == 4
    assert [n.face_image_id for n in index.search("t", vecs[37][None], 1)[0]] == ["F-37"]
    index.remove("t", [f"F-{i}" for i in range(36, 40)])
    assert index.size("t") == 0 and index.search("t", vecs[37][None], 1) == [[]]


@pytest.mark.parametrize("kind", ["pq", "hnsw"])
def test_erasure_and_purge_do_not_rebuild_an_approximate_index(
        store: SightingStore, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Erasing visitors one by one, or a purge, rebuilds the index's main tier only once a
    third of it is dead (and then once), yet no erased or purged face is found again."""
    ten = Tenancy(store)
    ten.create_tenant("default", retention_days=30)
    visitors = [f"V-{i:06d}" for i in range(30)]
    store.write(batch([sighting(v, at(k, day=0 if i < 5 else 99)) for i, v in enumerate(visitors)
                       for k in range(4)]))
    index = FaissAnnIndex(8, AnnOptions(kind=kind, flush=8, min_main=8, pq_m=4))
    for chunk in store.load_exemplars("default"):
        index.add(chunk)
    faces = {v: [e.face_image_id for e in ch if e.visitor_id == v] for ch in
             store.load_exemplars("default") for v in visitors}
    vecs = {e.face_image_id: e.embedding for ch in store.load_exemplars("default") for e in ch}
    rebuilds = _count_rebuilds(monkeypatch)
    gone = visitors[26:]
    for vid in gone:
        erase_visitor(store, index, ten, "default", vid, "admin")
    assert rebuilds == []
    purge_tenant(store, index, ten, "default", "test", now=at(0, day=100))  # 5 visitors
    gone += visitors[:5]
    assert rebuilds == [] and index.size("default") == 4 * 21
    erased = [f for v in gone for f in faces[v]]
    hits = index.search("default", np.stack([vecs[f] for f in erased]), 8)
    assert not {h.face_image_id for row in hits for h in row} & set(erased)
    assert not {h.visitor_id for row in hits for h in row} & set(gone)
    purge_tenant(store, index, ten, "default", "test", now=at(0, day=200))  # past a third
    assert len(rebuilds) == 1 and index.size("default") == 0


def test_a_marked_visitors_copies_follow_a_split_part_into_its_erasure() -> None:
    """Marked while wrongly merged with b: the enrolment's copies of b's faces go with b
    when the merge is undone, and with b's erasure; b is not recognised again."""
    sc, (a, va), (b, vb) = _two_people()
    sc.store.merge_visitors("t", va, vb, reason="wrong merge")
    sc.resolver.reload("t")
    Enrolments(sc.store, sc.tenancy).enrol_visitor("t", "staff", va, reason="till staff")
    sc.resolver.sync_known("t")
    sc.store.split_visitor("t", vb)
    sc.resolver.reload("t")
    erase_visitor(sc.store, sc.index, sc.tenancy, "t", vb, "admin", resolver=sc.resolver)
    left = np.stack([np.asarray(e, np.float32) for (e,) in rows(
        sc.store, "SELECT embedding FROM exemplars")])
    assert float((left @ b).max()) < 0.9  # nothing of b's face is kept
    assert float((left @ a).max()) > 0.99  # a's enrolment keeps a's
    out = sc.see(b, "b-later", 600, "C2")
    assert [s.face_id for s in out.sightings] not in ([va], [vb])


def test_erasure_and_purge_take_the_reason_given_for_a_merge() -> None:
    sc = _Scene()
    sc.store.write(batch([sighting(v, at(0), tenant="t") for v in
                          ("V-000001", "V-000002", "V-000003", "V-000004")]))
    for keep, absorb in (("V-000001", "V-000002"), ("V-000003", "V-000004")):
        rec = sc.store.merge_visitors("t", keep, absorb, reason="Mrs Jane Doe, red coat")
        sc.tenancy.audit("t", "admin", "visitor.merge", {
            "keep": rec.keep, "absorb": rec.absorb, "merge_id": rec.merge_id,
            "reason": "Mrs Jane Doe, red coat"})
    erase_visitor(sc.store, None, sc.tenancy, "t", "V-000002", "admin")
    merges = [a["detail"] for a in sc.tenancy.audit_log("t") if a["action"] == "visitor.merge"]
    assert sorted("reason" in d for d in merges) == [False, True]  # the other pair's stays
    assert {d.get("erased") for d in merges} == {True, None}
    # retention: once the other pair's visitors are gone, so is its reason
    purge_tenant(sc.store, None, sc.tenancy, "t", "test", now=at(0, day=400))
    merges = [a["detail"] for a in sc.tenancy.audit_log("t") if a["action"] == "visitor.merge"]
    assert not any("reason" in d for d in merges) and len(merges) == 2


def test_retention_reaches_data_under_a_tenant_never_registered(store: SightingStore) -> None:
    """`revisit ingest` writes under "default" without registering it: retention still
    applies there, with the default retention."""
    from revisit.tenancy.db import DEFAULT_RETENTION_DAYS
    from revisit.tenancy.privacy import purgeable_tenants

    ten = Tenancy(store)
    ten.create_tenant("acme", retention_days=30)
    store.write(batch([sighting("V-000001", at(0)), sighting("V-000002", at(0, day=300))]))
    assert purgeable_tenants(store, ten) == ["acme", "default"]
    counts = purge_tenant(store, None, ten, "default", "test",
                          now=at(0, day=DEFAULT_RETENTION_DAYS + 1))
    assert counts["sightings"] == 1 and store.stats("default")["sightings"] == 1
    with pytest.raises(TenancyError, match="unknown tenant 'nobody'"):
        purge_tenant(store, None, ten, "nobody", "test")


def _one_face(b: Batch) -> Batch:
    """An enrolment photo's processing, without the models: one face, its embedding
    drawn from the photo's image id (two photos, two faces)."""
    fr, bbox = b.frames[0], (0, 0, 90, 90)
    seed = int.from_bytes(fr.image_id.encode()[-8:], "big")
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    b.faces.append(Face(fr.tenant, fr.camera_id, fr.location_id, fr.image_id, fr.ts,
                        face_image_id(fr.tenant, fr.image_id, bbox), bbox,
                        np.zeros((5, 2), np.float32), 0.9, 0.9, True, None,
                        v / np.linalg.norm(v)))
    return b


def test_removing_an_enrolment_keeps_a_visitor_others_were_merged_into(store: SightingStore
                                                                        ) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default")

    book = Enrolments(store, ten)
    e = book.enrol_photos("default", "staff", [b"a"], label="Anna", reason="staff",
                          process=_one_face)
    store.write(batch([sighting("V-000009", at(0))]))
    store.merge_visitors("default", e.visitor_id, "V-000009", reason="the same person")
    book.remove("default", e.enrolment_id)
    detail = store.visitor_detail("default", "V-000009")
    assert detail is not None and detail.visitor_id == e.visitor_id


def test_removing_an_enrolment_takes_its_label_and_reason_from_the_audit_log(
        store: SightingStore) -> None:
    ten = Tenancy(store)
    ten.create_tenant("default")

    book = Enrolments(store, ten)
    anna = book.enrol_photos("default", "staff", [b"a"], label="Anna Example",
                             reason="cashier until May", process=_one_face)
    book.enrol_photos("default", "staff", [b"bb"], label="Ben Example",
                      reason="manager", process=_one_face)
    book.remove("default", anna.enrolment_id)
    log = ten.audit_log("default", 100)
    text = str(log)
    assert "Anna Example" not in text and "cashier until May" not in text
    assert "Ben Example" in text and "manager" in text  # another enrolment's entries stay
    mine = [r for r in log if anna.enrolment_id in str(r)]
    assert [r["action"] for r in mine] == ["known.remove", "known.enrol"]  # what was done stays


def test_removing_an_enrolment_leaves_no_photo_vector_in_an_approximate_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An approximate index only marks removed vectors dead: removing an enrolment clears
    them, as erasure does, so no copy of the photos' embeddings stays in memory, and
    without rebuilding the index."""
    store = DuckDBStore(":memory:")
    ten = Tenancy(store)
    ten.create_tenant("default")
    book = Enrolments(store, ten)
    e = book.enrol_photos("default", "staff", [b"a", b"bb"], label="Anna", reason="staff",
                          process=_one_face_each)
    index = FaissAnnIndex(128, AnnOptions(kind="ivf", flush=8, min_main=8, nlist=2))
    rng = np.random.default_rng(2)
    index.add([Exemplar("default", f"V-{i:06d}", f"F-{i}", _unit(rng.normal(size=128)),
                        0.9, T0) for i in range(20)])
    photos = [ex for chunk in store.load_exemplars("default") for ex in chunk]
    index.add(photos)
    index.add([Exemplar("default", f"V-{i:06d}", f"F-{i}", _unit(rng.normal(size=128)),
                        0.9, T0) for i in range(20, 40)])
    t = index._tenants["default"]
    assert t.main is not None and {index._tenants["default"].by_face[p.face_image_id]
                                   for p in photos} <= t.in_main

    rebuilds = _count_rebuilds(monkeypatch)
    book.remove("default", e.enrolment_id, index=index)

    assert rebuilds == [] and not t.readable and index.size("default") == 40
    kept = _held_in_main(index, "default")
    for p in photos:
        assert not np.isclose(kept @ np.asarray(p.embedding, np.float32), 1.0, atol=1e-3).any()


def _one_face_each(b: Batch) -> Batch:
    """:func:`_one_face` for every photo of the batch."""
    for fr in b.frames:
        _one_face(Batch(b.batch_id, frames=[fr], faces=b.faces))
    return b
