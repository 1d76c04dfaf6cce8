"""The camera tracker's linking rules, on synthetic faces with controlled embeddings,
positions and clothes (tests/identity/test_resolver.py runs them on real faces)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np

from revisit.identity.tracks import CameraTracks, TrackParams
from revisit.records import Face

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
PARAMS = TrackParams(gap=timedelta(seconds=120), motion_s=4.0, face_link=0.48, face_veto=0.25,
                     context_veto=0.45, min_det_score=0.75)
_n = itertools.count()
RNG = np.random.default_rng(0)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def person(sim: float = 0.35, n: int = 12) -> list[np.ndarray]:
    """Embeddings of one person's snapshots, each ~``sim`` alike to the person's axis:
    too far apart to link by face alone (< 0.48), well above the veto."""
    axis = unit(RNG.normal(size=128))
    out = []
    for _ in range(n):
        noise = unit(RNG.normal(size=128))
        noise = unit(noise - (noise @ axis) * axis)
        out.append(unit(np.sqrt(sim) * axis + np.sqrt(1 - sim) * noise))
    return out


def clothes(hue: int) -> np.ndarray:
    h = np.full(36, 0.002, np.float32)
    h[hue] += 0.5
    h[32 + hue % 4] += 0.5
    return h / h.sum()


def face(emb: np.ndarray | None, x: float, y: float, t: float, *, h: float = 40,
         ctx: np.ndarray | None = None, matchable: bool = True) -> Face:
    i = next(_n)
    return Face(tenant="t", camera_id="c", location_id="L", image_id=f"I{t}",
                ts=T0 + timedelta(seconds=t), face_image_id=f"F{i}",
                bbox=(round(x), round(y), round(h * 0.8), round(h)),
                landmarks=np.zeros((5, 2), np.float32), det_score=0.9, quality=0.8,
                embedding=emb, matchable=matchable and emb is not None, context=ctx)


def test_a_walking_person_is_one_track_though_the_face_alone_would_split_it():
    cam = CameraTracks("t", "c", PARAMS)
    e = person()
    keys = {cam.link([face(e[i], 100 + 50 * i, 200, i)])[0].key for i in range(6)}
    assert len(keys) == 1
    # pairs of these snapshots are below the face link: position made the track
    assert float(e[0] @ e[5]) < PARAMS.face_link


def test_two_people_crossing_keep_their_tracks():
    cam = CameraTracks("t", "c", PARAMS)
    a, b = person(), person()
    ca, cb = clothes(3), clothes(17)
    tracks = {"a": set(), "b": set()}
    for i in range(7):  # a walks right, b walks left; they pass each other at i = 3
        fa = face(a[i], 100 + 40 * i, 200, i, ctx=ca)
        fb = face(b[i], 340 - 40 * i, 210, i, ctx=cb)
        ta, tb = cam.link([fa, fb])
        tracks["a"].add(ta.key)
        tracks["b"].add(tb.key)
    assert len(tracks["a"]) == 1 and len(tracks["b"]) == 1 and tracks["a"] != tracks["b"]


def test_someone_else_in_the_same_spot_starts_a_new_track():
    cam = CameraTracks("t", "c", PARAMS)
    a, b = person(), person()
    first = cam.link([face(a[0], 200, 200, 0)])[0]
    assert float(a[0] @ b[0]) < PARAMS.face_veto
    assert cam.link([face(b[0], 205, 200, 1)])[0] is not first


def test_other_clothes_in_the_same_spot_start_a_new_track():
    cam = CameraTracks("t", "c", PARAMS)
    first = cam.link([face(None, 200, 200, 0, ctx=clothes(1))])[0]
    assert cam.link([face(None, 202, 200, 1, ctx=clothes(20))])[0] is not first
    same = cam.link([face(None, 202, 200, 2, ctx=clothes(20))])[0]
    assert same is not first and same.faces == 2


def test_a_face_with_no_usable_embedding_joins_only_close_by():
    cam = CameraTracks("t", "c", PARAMS)
    e = person()
    tr = cam.link([face(e[0], 200, 200, 0, ctx=clothes(5))])[0]
    near = cam.link([face(e[1], 215, 200, 1, ctx=clothes(5), matchable=False)])[0]
    assert near is tr
    far = cam.link([face(e[2], 330, 200, 2, ctx=clothes(5), matchable=False)])[0]
    assert far is not tr  # 3 face heights away: a matchable face could be there, this one not


def test_position_links_only_across_short_gaps_the_face_links_across_long_ones():
    cam = CameraTracks("t", "c", PARAMS)
    e = person()
    tr = cam.link([face(e[0], 200, 200, 0)])[0]
    assert cam.link([face(e[1], 200, 200, 30)])[0] is not tr  # same spot, 30 s later
    twin = unit(e[0] + 0.05 * RNG.normal(size=128).astype(np.float32))
    assert cam.link([face(twin, 500, 100, 60)])[0] is tr  # alike (> face_link), anywhere


def test_a_track_never_holds_two_faces_of_one_frame_and_closes_after_the_gap():
    cam = CameraTracks("t", "c", PARAMS)
    e = person(0.9)
    t1, t2 = cam.link([face(e[0], 100, 200, 0), face(e[1], 300, 200, 0)])
    assert t1 is not t2
    assert {t.key for t in cam.close_before(T0 + timedelta(seconds=100))} == set()
    assert {t.key for t in cam.close_before(T0 + timedelta(seconds=121))} == {t1.key, t2.key}
    assert cam.open == []


def test_a_person_walking_towards_the_camera_grows_without_losing_the_track():
    cam = CameraTracks("t", "c", PARAMS)
    e = person()
    keys = set()
    for i in range(6):
        h = 30 * 1.35 ** i  # 30 px to 134 px in 5 s
        keys.add(cam.link([face(e[i], 300 - 8 * i, 150 + 20 * i, i, h=h)])[0].key)
    assert len(keys) == 1


def test_a_face_unchanged_in_one_place_becomes_static_a_living_one_does_not():
    params = TrackParams(gap=timedelta(seconds=120), motion_s=4.0, face_link=0.48,
                         face_veto=0.25, context_veto=0.45, min_det_score=0.75,
                         static_after=timedelta(seconds=60))
    cam = CameraTracks("t", "c", params)
    poster = person(0.9)[0]
    tr = None
    for i in range(0, 70, 5):  # the same pixels, the same place, every 5 s
        tr = cam.link([face(poster, 300, 100, i)])[0]
        assert tr.still == (i > 0)
    assert tr is not None and tr.static
    cam2 = CameraTracks("t", "c", params)
    alive = person(0.35, 36)  # a person sitting still: the face
    keys = set()  # changes from shot to shot (pose, expression)
    for k, i in enumerate(range(0, 70, 2)):
        tr = cam2.link([face(alive[k % 36], 300 + (k % 2), 100, i)])[0]
        keys.add(tr.key)
        assert not tr.static and not tr.still
    assert len(keys) == 1


def test_a_weak_face_unlike_its_track_joins_by_place_and_clothes_a_clear_one_does_not():
    """A face with a low embedding norm (looking down, turned) is unlike its own track as
    often as a stranger is: its unlikeness does not veto; a clear face's does."""
    from dataclasses import replace

    params = replace(PARAMS, veto_faceness=7.0)
    a, b = person(), person()
    assert float(a[0] @ b[0]) < params.face_veto
    for faceness, joins in ((6.5, True), (9.0, False)):
        cam = CameraTracks("t", "c", params)
        tr = cam.link([face(a[0], 200, 200, 0, ctx=clothes(5))])[0]
        weak = face(b[0], 205, 200, 1, ctx=clothes(5))
        weak.faceness = faceness
        assert (cam.link([weak])[0] is tr) is joins
    # a weak face still needs the clothes of the track
    cam = CameraTracks("t", "c", params)
    tr = cam.link([face(a[0], 200, 200, 0, ctx=clothes(5))])[0]
    other = face(b[0], 205, 200, 1, ctx=clothes(20))
    other.faceness = 6.5
    assert cam.link([other])[0] is not tr
