"""The resolver's rules on real faces (SFace embeddings of lfw-dev photos).

Rules under test: same-frame cannot-link, tracks over consecutive snapshots (a poor face
joins through its track, a track of poor faces never founds a visitor), no face lost,
idempotence on redelivery, and consolidation merging one person split in two.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from tests.conftest import lfw_photo

from revisit.identity.consolidate import consolidate, load_clusters
from revisit.identity.index import FaissIndex
from revisit.identity.resolver import Resolver
from revisit.records import Batch, Face, Frame, face_image_id
from revisit.report.query import ReportQuery
from revisit.store.duckdb_store import DuckDBStore

PEOPLE = {"Alvaro_Uribe": 5, "Andre_Agassi": 5, "Angelina_Jolie": 4}
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
_ids = itertools.count()


@pytest.fixture(scope="module")
def emb() -> dict[tuple[str, int], np.ndarray]:
    """SFace embedding of the main face of each photo, through our own vision stages."""
    from revisit.config import Settings
    from revisit.vision.stages import Vision

    vision = Vision(Settings())
    out = {}
    for person, n in PEOPLE.items():
        for i in range(1, n + 1):
            path = lfw_photo(person, i)
            frame = Frame("t", "cam", "L", f"{person}-{i}", T0, data=path.read_bytes())
            b = vision.process(Batch("x", frames=[frame]))
            assert b.faces, f"no face found in {path}"
            main = max(b.faces, key=lambda f: f.bbox[2] * f.bbox[3])
            out[(person, i)] = main.embedding
    return out


def face(
    e: np.ndarray, image_id: str, *, camera: str = "S1-C1", minute: float = 0.0,
    creatable: bool = True, quality: float = 0.8, slot: int = 0, matchable: bool = True,
    x: int | None = None, det_score: float = 0.9, tenant: str = "t",
) -> Face:
    bbox = (10 + 100 * slot if x is None else x, 20, 80, 100)
    return Face(
        tenant=tenant, camera_id=camera, location_id=camera.split("-")[0], image_id=image_id,
        ts=T0 + timedelta(minutes=minute), face_image_id=face_image_id(tenant, image_id, bbox),
        bbox=bbox, landmarks=np.zeros((5, 2), np.float32), det_score=det_score, quality=quality,
        creatable=creatable, embedding=e, matchable=matchable,
    )


def batch_of(faces: list[Face]) -> Batch:
    frames = {}
    for f in faces:
        frames.setdefault(f.image_id, Frame(f.tenant, f.camera_id, f.location_id, f.image_id,
                                            f.ts))
    return Batch(f"b-{next(_ids)}", frames=list(frames.values()), faces=faces)


@pytest.fixture
def env(make_settings):  # type: ignore[no-untyped-def]
    # decide every track at once (tests of deferred creation set their own settings)
    settings = make_settings(identity={"create_after": 1})
    store = DuckDBStore(":memory:")
    resolver = Resolver(settings, store, FaissIndex(128))

    def run(faces: list[Face]) -> Batch:
        out = resolver.resolve(batch_of(faces))
        store.write(out)
        return out

    yield settings, store, resolver, run
    store.close()


def visitors_of(b: Batch) -> dict[str, str]:
    return {s.face_image_id: s.face_id for s in b.sightings}


def test_same_frame_never_shares_a_visitor_even_for_one_person(env, emb) -> None:
    _, _, _, run = env
    # learn Alvaro first, then show two photos of him in one frame (a poster and the man)
    run([face(emb[("Alvaro_Uribe", 1)], "f0")])
    a, b = face(emb[("Alvaro_Uribe", 2)], "f1", slot=0), face(emb[("Alvaro_Uribe", 3)], "f1", slot=1)
    out = visitors_of(run([a, b]))
    assert len(out) == 2
    assert out[a.face_image_id] != out[b.face_image_id]


def test_repeat_visit_with_other_photos_is_the_same_visitor(env, emb) -> None:
    _, _, _, run = env
    first = visitors_of(run([face(emb[("Andre_Agassi", 1)], "a1")]))
    later = visitors_of(run([face(emb[("Andre_Agassi", 2)], "a2", minute=60 * 24)]))
    other = visitors_of(run([face(emb[("Angelina_Jolie", 1)], "j1", minute=60 * 25)]))
    assert set(first.values()) == set(later.values())
    assert set(other.values()).isdisjoint(first.values())


def test_poor_face_joins_through_its_track_but_never_founds_alone(env, emb) -> None:
    _, _store, _, run = env
    # one camera, consecutive snapshots: a good face then two poor ones of the same person
    track = [
        face(emb[("Angelina_Jolie", 1)], "t1", minute=0.00),
        face(emb[("Angelina_Jolie", 1)], "t2", minute=0.25, creatable=False, quality=0.2),
        face(emb[("Angelina_Jolie", 2)], "t3", minute=0.50, creatable=False, quality=0.2),
    ]
    out = run(track)
    assert len(out.sightings) == 3 and len(set(visitors_of(out).values())) == 1
    assert len(out.visitors_created) == 1
    # a poor face of an unknown person, alone: dropped, no visitor created
    lone = run([face(emb[("Alvaro_Uribe", 1)], "u1", minute=90, creatable=False, quality=0.2)])
    assert lone.sightings == [] and lone.visitors_created == []


def test_no_face_is_lost_and_each_track_is_one_visitor(env, emb) -> None:
    _, _, resolver, run = env
    faces = []
    for i, person in enumerate(PEOPLE):  # three people, each on its own camera, 4 snapshots
        for k in range(4):
            faces.append(face(emb[(person, 1 + k % 2)], f"{person}-{k}", camera=f"S1-C{i + 1}",
                              minute=0.25 * k))
    # and two of them share frames on a fourth camera
    for k in range(3):
        faces.append(face(emb[("Alvaro_Uribe", 3)], f"shared-{k}", camera="S2-C1", minute=k * 0.25, slot=0))
        faces.append(face(emb[("Andre_Agassi", 3)], f"shared-{k}", camera="S2-C1", minute=k * 0.25, slot=1))
    out = run(faces)
    assert resolver.flush() is None  # nothing held beyond a batch
    got = visitors_of(out)
    assert set(got) == {f.face_image_id for f in faces}  # every creatable face came out
    assert len(set(got.values())) == 3
    by_frame: dict[str, list[str]] = {}
    for s in out.sightings:
        by_frame.setdefault(s.image_id, []).append(s.face_id)
    assert all(len(v) == len(set(v)) for v in by_frame.values())
    # each person's faces share one visitor across cameras
    for person in ("Alvaro_Uribe", "Andre_Agassi"):
        ids = {got[f.face_image_id] for f in faces if f.image_id.startswith(person)}
        assert len(ids) == 1


def test_redelivered_batch_keeps_its_visitors(env, emb) -> None:
    _, store, _, run = env
    faces = [face(emb[("Andre_Agassi", 1)], "r1"), face(emb[("Alvaro_Uribe", 1)], "r1", slot=1)]
    first = visitors_of(run(faces))
    again = run([face(f.embedding, f.image_id, slot=i) for i, f in enumerate(faces)])
    assert visitors_of(again) == first
    assert again.visitors_created == [] and again.exemplars_added == []
    assert store.stats("t")["sightings"] == 2


def test_exemplars_stay_bounded(env, emb) -> None:
    settings, store, resolver, run = env
    for k in range(12):  # twelve visits of one person, one snapshot each
        run([face(emb[("Alvaro_Uribe", 1 + k % 5)], f"v{k}", minute=60 * k, quality=0.5 + k / 30)])
    g = resolver._gallery("t")
    assert max(len(h) for h in g.exemplars.values()) <= settings.identity.max_exemplars
    assert store.stats("t")["exemplars"] <= settings.identity.max_exemplars * len(g.exemplars)


def test_consolidation_merges_a_split_identity_and_split_undoes_it(make_settings, emb) -> None:
    # forces one person into two; every track decided at once
    strict = make_settings(identity={"match_threshold": 0.95, "create_after": 1})
    store = DuckDBStore(":memory:")
    resolver = Resolver(strict, store, FaissIndex(128))
    for k, (person, i) in enumerate([("Andre_Agassi", 1), ("Andre_Agassi", 2), ("Angelina_Jolie", 1),
                                     ("Andre_Agassi", 3), ("Angelina_Jolie", 2)]):
        store.write(resolver.resolve(batch_of([face(emb[(person, i)], f"c{k}", minute=60 * k)])))
    query = ReportQuery(T0.date(), T0.date(), tenant="t")
    assert store.report_header(query).unique_visitors == 5
    settings = make_settings()  # default merge threshold
    merges = consolidate(settings, store, resolver, "t")
    assert len(merges) == 3  # Andre 3 -> 1, Angelina 2 -> 1
    assert store.report_header(query).unique_visitors == 2
    clusters = load_clusters(store, "t")
    assert sorted(len(c.frames) for c in clusters.values()) == [2, 3]
    # the resolver now matches against the merged visitor
    assert set(resolver._gallery("t").exemplars) == set(clusters)
    store.split_visitor("t", merges[0].absorb)
    assert store.report_header(query).unique_visitors == 3
    store.close()


def test_consolidation_never_merges_faces_seen_together(make_settings, emb) -> None:
    strict = make_settings(identity={"match_threshold": 0.95, "create_after": 1})
    store = DuckDBStore(":memory:")
    resolver = Resolver(strict, store, FaissIndex(128))
    # the same person twice in one frame (e.g. a mirror): two visitors that must stay two
    store.write(resolver.resolve(batch_of([
        face(emb[("Alvaro_Uribe", 1)], "m1", slot=0), face(emb[("Alvaro_Uribe", 2)], "m1", slot=1),
    ])))
    assert consolidate(make_settings(), store, resolver, "t") == []
    store.close()


SECOND = 1 / 60


def test_a_turning_head_in_the_next_batch_stays_the_same_visitor(env, emb) -> None:
    _, _, _, run = env
    first = run([face(emb[("Andre_Agassi", 1)], f"p{k}", minute=k * SECOND, x=100 + 20 * k)
                 for k in range(3)])
    vid = set(visitors_of(first).values())
    assert len(vid) == 1
    # the next camera batch: his head has turned (no usable face), he walked on a little;
    # then a face that on its own would be someone else (another person's photo)
    turned = [face(emb[("Andre_Agassi", 2)], f"p{k}", minute=k * SECOND, x=100 + 20 * k,
                   matchable=False, creatable=False, quality=0.2) for k in range(3, 5)]
    later = run(turned)
    assert set(visitors_of(later).values()) == vid
    assert later.visitors_created == []


def test_someone_else_stepping_into_the_spot_is_not_that_visitor(env, emb) -> None:
    _, _, _, run = env
    a = visitors_of(run([face(emb[("Andre_Agassi", 1)], "s0", x=100)]))
    b = visitors_of(run([face(emb[("Angelina_Jolie", 1)], "s1", minute=SECOND, x=104)]))
    assert set(a.values()).isdisjoint(b.values())


def test_a_young_track_waits_for_more_snapshots_before_founding_a_visitor(make_settings, emb):
    settings = make_settings(identity={"create_after": 3})
    store = DuckDBStore(":memory:")
    resolver = Resolver(settings, store, FaissIndex(128))
    n = settings.identity.create_after
    assert n > 1
    snaps = [face(emb[("Angelina_Jolie", 1 + k % 2)], f"y{k}", minute=k * SECOND, x=100 + 10 * k)
             for k in range(n + 1)]
    first = resolver.resolve(batch_of(snaps[:1]))
    assert first.sightings == [] and first.visitors_created == []  # held, not lost
    store.write(first)
    later = resolver.resolve(batch_of(snaps[1:n]))  # now n faces: the track founds a visitor
    store.write(later)
    assert len(later.visitors_created) == 1
    assert {s.face_image_id for s in later.sightings} == {f.face_image_id for f in snaps[:n]}
    # one snapshot of someone else, then the stream ends: decided at the end, not dropped
    lone = resolver.resolve(batch_of([face(emb[("Alvaro_Uribe", 1)], "z1", minute=5, x=400)]))
    assert lone.sightings == []
    tail = resolver.flush()
    assert tail is not None and len(tail.visitors_created) == 1 and len(tail.sightings) == 1
    store.close()


def test_several_fair_snapshots_found_a_visitor_a_weak_track_is_held_then_dropped(env, emb) -> None:
    settings, _, resolver, run = env
    n = settings.identity.track_create_faces
    fair = [face(emb[("Alvaro_Uribe", 1 + k % 2)], f"f{k}", minute=k * SECOND, x=100 + 10 * k,
                 creatable=False, quality=0.3) for k in range(n)]
    # the first n - 1 arrive in one batch: held, not yet a visitor, nothing dropped
    early = run(fair[:-1])
    assert early.sightings == [] and early.dropped == []
    # the n-th snapshot arrives in the next batch: the track founds one visitor, and the
    # held faces become its sightings too
    rest = run(fair[-1:])
    assert len(rest.visitors_created) == 1
    assert {s.face_image_id for s in rest.sightings} == {f.face_image_id for f in fair}
    # a track of faces too poor to count (unconfident detections) is held, then dropped at
    # the end of the stream with its reason
    weak = run([face(emb[("Angelina_Jolie", 1)], f"w{k}", minute=10 + k * SECOND, x=300,
                     creatable=False, quality=0.2, det_score=0.65) for k in range(n)])
    assert weak.sightings == []
    tail = resolver.flush()
    assert tail is not None and {d.reason for d in tail.dropped} == {"weak_track"}
    assert len(tail.dropped) == n


def test_a_poster_is_withdrawn_once_found_static_and_never_counted_again(make_settings, emb):
    settings = make_settings(identity={"static_after_s": 30})
    store = DuckDBStore(":memory:")
    resolver = Resolver(settings, store, FaissIndex(128))
    poster = emb[("Angelina_Jolie", 1)]
    query = ReportQuery(T0.date(), T0.date(), tenant="t")

    def run(faces: list[Face]) -> Batch:
        out = resolver.resolve(batch_of(faces))
        store.write(out)  # erases a withdrawn visitor in the same transaction
        return out

    # its first snapshot looks like a person and founds a visitor ...
    first = run([face(poster, "s0", x=200)])
    assert len(first.visitors_created) == 1
    # ... the same pixels in the same place for 30 s: a picture; the visitor is withdrawn
    out = [run([face(poster, f"s{k}", minute=k * 10 * SECOND, x=200)]) for k in range(1, 6)]
    assert [v for b in out for v in b.visitors_withdrawn] == [("t", first.visitors_created[0][1])]
    assert {d.reason for b in out for d in b.dropped} == {"static"}
    assert store.report_header(query).unique_visitors == 0
    # hidden for a while (its track closes), then seen again: static at once, no new visitor
    again = [run([face(poster, f"r{k}", minute=10 + k * 10 * SECOND, x=200)]) for k in range(3)]
    assert all(b.visitors_created == [] for b in again)
    assert store.report_header(query).unique_visitors == 0
    # a person next to it is counted as usual
    person = run([face(emb[("Andre_Agassi", 1)], "p0", minute=11, x=400)])
    assert len(person.visitors_created) == 1
    store.close()


def test_a_stop_keeps_open_tracks_for_the_next_start(make_settings, emb) -> None:
    """A person seen across a stop (the end of a run, a graceful stop) stays one track: the
    next resolver on the same store continues the tracks the stop saved. A weak face right
    after it is a sighting of the track's visitor, and a track of weak faces cut in two
    still founds one visitor with all of its faces (not dropped at the cut)."""
    settings = make_settings(identity={"create_after": 1})
    store = DuckDBStore(":memory:")
    jolie = face(emb[("Angelina_Jolie", 1)], "j0", x=100)
    weak = [face(emb[("Alvaro_Uribe", 1 + k)], f"u{k}", camera="S1-C2", minute=k * SECOND,
                 x=400 + 10 * k, creatable=False) for k in range(3)]
    first = Resolver(settings, store, FaissIndex(128))
    out = first.resolve(batch_of([jolie, weak[0]]))
    store.write(out)
    (_, vid, _), = out.visitors_created
    tail = first.flush(["t"], keep_open=True)
    assert tail is not None and tail.dropped == []  # the weak track waits for the next run
    store.write(tail)
    assert {(t.camera_id, t.visitor_id) for t in store.open_tracks("t")} == {
        ("S1-C1", vid), ("S1-C2", None)}
    again = Resolver(settings, store, FaissIndex(128))
    turned = face(emb[("Alvaro_Uribe", 4)], "j1", minute=SECOND, x=110, creatable=False,
                  matchable=False)  # too turned to match anyone: it goes by its track
    out = again.resolve(batch_of([turned, *weak[1:]]))
    store.write(out)
    assert store.open_tracks("t") == []  # read back once
    by_face = {s.face_image_id: s.face_id for s in out.sightings}
    assert by_face[turned.face_image_id] == vid
    assert len(out.visitors_created) == 1 and {by_face[f.face_image_id] for f in weak} == {
        out.visitors_created[0][1]}
    assert store.held_faces("t") == [] and store.stats("t")["sightings"] == 5
    store.close()


def test_a_track_saved_at_a_stop_follows_a_merge_made_before_the_next_start(
        make_settings, emb) -> None:
    """The next start reads the saved tracks back with their visitors as the store has them
    now: a visitor merged away in between continues as its group's id."""
    settings = make_settings(identity={"create_after": 1})
    store = DuckDBStore(":memory:")
    first = Resolver(settings, store, FaissIndex(128))
    out = first.resolve(batch_of([face(emb[("Angelina_Jolie", 1)], "j0", x=100),
                                  face(emb[("Andre_Agassi", 1)], "a0", camera="S1-C2",
                                       x=400)]))
    store.write(out)
    by_face = {s.image_id: s.face_id for s in out.sightings}
    tail = first.flush(["t"], keep_open=True)
    assert tail is not None
    store.write(tail)
    store.merge_visitors("t", by_face["j0"], by_face["a0"])  # an analyst's call
    again = Resolver(settings, store, FaissIndex(128))
    turned = face(emb[("Andre_Agassi", 2)], "a1", camera="S1-C2", minute=SECOND, x=410,
                  creatable=False, matchable=False)  # goes by its track alone
    out = again.resolve(batch_of([turned]))
    assert [s.face_id for s in out.sightings] == [by_face["j0"]]
    assert out.visitors_created == []
    store.close()


def test_a_resolver_killed_while_holding_faces_loses_none(make_settings, emb) -> None:
    """Held faces are written with their batch: the next resolver (a restart after a kill,
    no flush) continues their track, a redelivery of their batch does not double them, and
    the end of the next run decides what is left."""
    settings = make_settings(identity={"create_after": 3})
    store = DuckDBStore(":memory:")
    snaps = [face(emb[("Angelina_Jolie", 1 + k % 2)], f"k{k}", minute=k * SECOND, x=100 + 10 * k)
             for k in range(3)]
    first = Resolver(settings, store, FaissIndex(128)).resolve(batch_of(snaps[:1]))
    store.write(first)
    assert first.sightings == [] and [f.face_image_id for f in first.held] == [
        snaps[0].face_image_id]
    assert [f.face_image_id for f in store.held_faces("t")] == [snaps[0].face_image_id]
    # killed here; the next resolver gets the same batch again, then the rest of the track
    again = Resolver(settings, store, FaissIndex(128))
    redelivered = again.resolve(batch_of(snaps[:1]))
    store.write(redelivered)
    assert redelivered.sightings == [] and redelivered.held == []
    rest = again.resolve(batch_of(snaps[1:]))
    store.write(rest)
    assert len(rest.visitors_created) == 1
    assert {s.face_image_id for s in rest.sightings} == {f.face_image_id for f in snaps}
    assert store.held_faces("t") == [] and store.stats("t")["sightings"] == 3

    # two snapshots of someone else held, killed, and the next run has no new face for
    # them: its end reads them back and decides them
    other = [face(emb[("Alvaro_Uribe", 1 + k)], f"u{k}", minute=10 + k * SECOND, x=400)
             for k in range(2)]
    store.write(Resolver(settings, store, FaissIndex(128)).resolve(batch_of(other)))
    assert len(store.held_faces("t")) == 2
    last = Resolver(settings, store, FaissIndex(128))
    assert last.flush() is None  # nothing in memory, nothing asked for
    tail = last.flush(["t"])
    assert tail is not None and len(tail.visitors_created) == 1
    assert {s.face_image_id for s in tail.sightings} == {f.face_image_id for f in other}
    store.write(tail)
    assert store.held_faces("t") == [] and store.stats("t")["visitors"] == 2
    store.close()


def test_held_faces_past_a_retention_shortened_meanwhile_are_dropped(make_settings, emb):
    """Held faces passed the retention door when they came; the tenant's retention is
    shortened before they are decided (read back after a kill, or by the end of a run):
    they are dropped then, not stored, and the store forgets them."""
    from revisit.records import EXPIRED
    from revisit.tenancy.db import Tenancy
    from revisit.tenancy.privacy import RetentionCutoffs

    settings = make_settings(identity={"create_after": 3})
    store = DuckDBStore(":memory:")
    tenancy = Tenancy(store)
    tenancy.create_tenant("t", retention_days=36500)
    cutoffs = RetentionCutoffs(store)
    snaps = [face(emb[("Angelina_Jolie", 1 + k)], f"r{k}", minute=k * SECOND, x=100 + 10 * k)
             for k in range(2)]
    held = Resolver(settings, store, FaissIndex(128), refuse=cutoffs.refuse).resolve(
        batch_of(snaps))
    store.write(held)
    assert held.sightings == [] and len(store.held_faces("t")) == 2  # killed here
    tenancy.set_retention("t", 30)
    cutoffs.forget("t")
    tail = Resolver(settings, store, FaissIndex(128), refuse=cutoffs.refuse).flush(["t"])
    assert tail is not None and tail.sightings == [] and tail.visitors_created == []
    assert sorted((d.image_id, d.reason) for d in tail.dropped) == [
        ("r0", EXPIRED), ("r1", EXPIRED)]
    store.write(tail)
    assert store.held_faces("t") == [] and store.stats("t")["sightings"] == 0
    store.close()


def test_a_tenants_held_track_is_never_decided_in_another_tenants_batch(make_settings, emb):
    """Tenant u's camera goes quiet holding a face; tenant t's batch, long after, must not
    close it (it would be decided with t's gallery and id counter): it waits for u's own
    batch or the end of the stream."""
    settings = make_settings(identity={"create_after": 3})
    store = DuckDBStore(":memory:")
    resolver = Resolver(settings, store, FaissIndex(128))
    store.write(resolver.resolve(batch_of([face(emb[("Alvaro_Uribe", 1)], "u0", tenant="u",
                                                camera="U-C1")])))
    later = resolver.resolve(batch_of([face(emb[("Andre_Agassi", 1)], "t0", tenant="t",
                                            camera="T-C1", minute=10)]))
    store.write(later)
    assert {s.tenant for s in later.sightings} <= {"t"}
    assert {t for t, _, _ in later.visitors_created} <= {"t"} and later.released == []
    tail = resolver.flush()
    assert tail is not None
    assert {(s.tenant, s.face_id) for s in tail.sightings} >= {("u", "V-000001")}
    assert {(t, v) for t, v, _ in tail.visitors_created} >= {("u", "V-000001")}
    store.close()


def test_an_open_track_of_an_erased_visitor_is_not_saved_at_a_stop(make_settings, emb) -> None:
    """Erased while their track is still open (the embedded server): the track forgets the
    visitor in memory, but a stop must not then save it (with the person's pooled embedding
    and clothes) for the next start: nothing of them is stored after their erasure."""
    from revisit.tenancy.db import Tenancy
    from revisit.tenancy.privacy import erase_visitor

    settings = make_settings(identity={"create_after": 1})
    store = DuckDBStore(":memory:")
    index = FaissIndex(128)
    resolver = Resolver(settings, store, index)
    out = resolver.resolve(batch_of([face(emb[("Angelina_Jolie", 1)], "j0", x=100),
                                     face(emb[("Andre_Agassi", 1)], "p0", x=400)]))
    store.write(out)
    by_face = {s.image_id: s.face_id for s in out.sightings}
    erase_visitor(store, index, Tenancy(store), "t", by_face["j0"], "admin", resolver=resolver)
    tail = resolver.flush(["t"], keep_open=True)
    assert tail is not None
    store.write(tail)
    assert [t.visitor_id for t in store.open_tracks("t")] == [by_face["p0"]]
    store.close()
