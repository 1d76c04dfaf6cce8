"""Consolidation's merge plan: average linkage, cannot-link, and the same-store bar."""

from __future__ import annotations

import numpy as np
import pytest

from revisit.identity.consolidate import ClusterStats, plan_merges


def _pair_at(similarity: float, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors whose dot product is ``similarity``."""
    a = np.zeros(dim)
    a[0] = 1.0
    b = np.zeros(dim)
    b[0], b[1] = similarity, np.sqrt(1 - similarity**2)
    return a, b


def _clusters(similarity: float, places_a: set[str], places_b: set[str],
              frames_b: set[str] | None = None) -> dict[str, ClusterStats]:
    a, b = _pair_at(similarity)
    return {
        "V-000001": ClusterStats(a * 2, 2.0, {"f1", "f2"}, places_a),  # two sightings each
        "V-000002": ClusterStats(b * 2, 2.0, frames_b or {"f3", "f4"}, places_b),
    }


def test_a_shared_store_lowers_the_bar() -> None:
    # average similarity 0.39: below the general bar 0.42, above the same-store bar 0.36
    assert plan_merges(_clusters(0.39, {"S1"}, {"S2"}), 0.42, 0.36) == []
    merged = plan_merges(_clusters(0.39, {"S1", "S2"}, {"S2"}), 0.42, 0.36)
    assert [(p.keep, p.absorb) for p in merged] == [("V-000001", "V-000002")]
    assert abs(merged[0].similarity - 0.39) < 1e-9
    # below both bars: never merged, shared store or not
    assert plan_merges(_clusters(0.30, {"S1"}, {"S1"}), 0.42, 0.36) == []
    # without a same-store bar the general one applies everywhere
    assert plan_merges(_clusters(0.39, {"S1"}, {"S1"}), 0.42) == []


def test_seen_in_one_frame_is_never_merged_even_at_one_store() -> None:
    assert plan_merges(_clusters(0.9, {"S1"}, {"S1"}, frames_b={"f1", "f9"}), 0.42, 0.36) == []


def test_places_accumulate_through_merges() -> None:
    # C shares a store only with B; once A absorbs B, A+B shares it with C
    a, b = _pair_at(0.8)
    c = 0.5 * a + np.sqrt(1 - 0.25) * np.eye(16)[2]
    clusters = {
        "V-000001": ClusterStats(a, 1.0, {"f1"}, {"S1"}),
        "V-000002": ClusterStats(b, 1.0, {"f2"}, {"S1", "S2"}),
        "V-000003": ClusterStats(c, 1.0, {"f3"}, {"S2"}),
    }
    merged = plan_merges(clusters, 0.60, 0.30)
    assert [(p.keep, p.absorb) for p in merged] == [("V-000001", "V-000002"),
                                                    ("V-000001", "V-000003")]


def _run(cam: str, points: list[tuple[int, tuple[float, float, float, float]]]):  # type: ignore[no-untyped-def]
    """A Segment of sightings at (seconds, box) on camera ``cam``."""
    from datetime import datetime, timedelta

    from revisit.identity.consolidate import _segments

    t0 = datetime(2024, 5, 2, 10, 0, 0)
    rows = [(cam, "S1", t0 + timedelta(seconds=s), box) for s, box in points]
    (seg,) = _segments(rows, timedelta(seconds=30))
    return seg


def test_a_piece_inside_a_run_where_the_run_would_be_is_stitched() -> None:
    """One pass cut in three by the tracker (a face it could not link, at 17 s, while the
    person walked on): the piece sits in the gap of the run, where the run's movement
    across the gap puts it, and joins it at the stitch bar, not the merge bar."""
    from revisit.identity.consolidate import stitchable

    walk = [(14, (100, 100, 60, 60)), (15, (130, 100, 60, 60)), (16, (160, 100, 60, 60)),
            (18, (220, 100, 60, 60)), (19, (250, 100, 60, 60))]
    a, b = _pair_at(0.30)

    def clusters(piece_box, piece_s: int = 17, frames_b=None):  # type: ignore[no-untyped-def]
        return {
            "V-000001": ClusterStats(a * 5, 5.0, {f"f{s}" for s, _ in walk}, {"S1"},
                                     [_run("cam", walk)]),
            "V-000002": ClusterStats(b, 1.0, frames_b or {f"f{piece_s}"}, {"S1"},
                                     [_run("cam", [(piece_s, piece_box)])]),
        }

    on_path = clusters((192, 102, 58, 58))
    assert stitchable(on_path, 4.0) == {frozenset(("V-000001", "V-000002"))}
    merged = plan_merges(on_path, 0.42, 0.36, stitch=0.22, stitch_s=4.0)
    assert [(m.keep, m.absorb) for m in merged] == [("V-000001", "V-000002")]
    # off the path (someone else across the room), or seen while the run was (two
    # people in one frame): not a piece of it
    assert stitchable(clusters((500, 300, 58, 58)), 4.0) == set()
    assert stitchable(clusters((160, 100, 60, 60), piece_s=16, frames_b={"f16b"}), 4.0) == set()
    assert plan_merges(clusters((500, 300, 58, 58)), 0.42, 0.36, stitch=0.22, stitch_s=4.0) == []


def test_a_pair_exactly_at_the_bar_merges() -> None:
    # "merged ... while the similarity stays at or above the bar": 0.5 exactly
    a, b = _pair_at(0.5)
    clusters = {"V-000001": ClusterStats(a, 1.0, {"f1"}, {"S1"}),
                "V-000002": ClusterStats(b, 1.0, {"f2"}, {"S2"})}
    merged = plan_merges(clusters, 0.5)
    assert [(p.keep, p.absorb, p.similarity) for p in merged] == [("V-000001", "V-000002", 0.5)]


def test_the_store_bar_holds_for_a_visit_before_a_merged_visitors_visit() -> None:
    """With ``visit_gap`` the store bar needs the two seen there on different visits, in
    either order: here V3 came a day before V1 and V2 (who merge first, at 0.95); the
    merged V1+V2 is at 0.39 to V3, under the general bar 0.42, over the store bar 0.36."""
    from datetime import datetime, timedelta

    from revisit.identity.consolidate import Segment

    e = np.eye(16)
    v1, v2 = e[0], 0.95 * e[0] + np.sqrt(1 - 0.95**2) * e[1]
    v3 = 0.4 * e[0] + np.sqrt(1 - 0.16) * e[2]  # to (v1 + v2) / 2: 0.4 * 1.95 / 2 = 0.39
    t = datetime(2024, 5, 2, 10, 0)
    box = (10.0, 10.0, 50.0, 50.0)

    def seg(ts: datetime) -> Segment:
        return Segment("cam", "S1", ((ts, box),))

    clusters = {
        "V-000001": ClusterStats(v1, 1.0, {"f1"}, {"S1"}, [seg(t + timedelta(days=1))]),
        "V-000002": ClusterStats(v2, 1.0, {"f2"}, {"S1"},
                                 [seg(t + timedelta(days=1, minutes=5))]),
        "V-000003": ClusterStats(v3, 1.0, {"f3"}, {"S1"}, [seg(t)]),
    }
    merged = plan_merges(clusters, 0.42, 0.36, visit_gap=timedelta(minutes=30))
    assert [(p.keep, p.absorb) for p in merged] == [("V-000001", "V-000002"),
                                                    ("V-000001", "V-000003")]
    assert merged[1].similarity == pytest.approx(0.39)
    # the same three seen on one visit (minutes apart): the general bar, so no second merge
    clusters["V-000003"] = ClusterStats(v3, 1.0, {"f3"}, {"S1"},
                                        [seg(t + timedelta(days=1, minutes=10))])
    merged = plan_merges(clusters, 0.42, 0.36, visit_gap=timedelta(minutes=30))
    assert [(p.keep, p.absorb) for p in merged] == [("V-000001", "V-000002")]


def test_consolidate_leaves_staff_out_and_a_threshold_alone_sets_both_bars(
    make_settings, monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    import revisit.identity.consolidate as C

    a, b = _pair_at(0.39)

    def clusters(*_args: object) -> dict[str, ClusterStats]:  # both seen at store S1
        return {"V-000001": ClusterStats(a, 1.0, {"f1"}, {"S1"}),
                "V-000002": ClusterStats(b, 1.0, {"f2"}, {"S1"})}

    class Store:
        staff_ids: tuple[str, ...] = ()

        def staff(self, tenant: str) -> tuple[str, ...]:
            return self.staff_ids

    monkeypatch.setattr(C, "load_clusters", clusters)
    settings = make_settings(identity={"merge_threshold": 0.42,
                                       "merge_threshold_same_store": 0.36})
    store = Store()
    # the configured bars: a shared store, 0.39 >= 0.36: merged
    assert [(p.keep, p.absorb) for p in C.consolidate(settings, store, None, "default",
                                                      dry_run=True)] == [("V-000001", "V-000002")]
    # --threshold 0.42 alone is the bar for every pair, shared store or not
    assert C.consolidate(settings, store, None, "default", threshold=0.42, dry_run=True) == []
    # enrolled staff are never consolidated (the resolver joins them at its stricter bar)
    store.staff_ids = ("V-000002",)
    assert C.consolidate(settings, store, None, "default", dry_run=True) == []


def test_a_run_continues_across_a_gap_of_exactly_the_track_gap() -> None:
    from datetime import datetime, timedelta

    from revisit.identity.consolidate import _segments

    t0 = datetime(2024, 5, 2, 10, 0, 0)
    box = (10.0, 10.0, 50.0, 50.0)
    rows = [("cam", "S1", t0 + timedelta(seconds=s), box) for s in (0, 30, 60, 91)]
    segs = _segments(rows, timedelta(seconds=30))
    # 0-30-60 are one run (gaps of exactly 30 s), 91 (31 s later) starts another
    assert sorted(len(s.points) for s in segs) == [1, 3]


def test_load_clusters_weighs_each_sighting_by_quarter_plus_quality(store) -> None:  # type: ignore[no-untyped-def]
    from revisit.identity.consolidate import load_clusters
    from revisit.store.testing import at, batch, sighting

    s1 = sighting("V-000001", at(0), "S1", quality=0.75)
    s2 = sighting("V-000001", at(1), "S2", quality=0.25)
    store.write(batch([s1, s2]))
    (c,) = load_clusters(store, "default").values()
    assert c.weight == pytest.approx(1.0 + 0.5)
    e1, e2 = (np.asarray(s.embedding, np.float64) for s in (s1, s2))
    want = 1.0 * e1 / np.linalg.norm(e1) + 0.5 * e2 / np.linalg.norm(e2)
    np.testing.assert_allclose(c.vec_sum, want, atol=1e-6)
    assert c.places == {"S1", "S2"} and len(c.frames) == 2


def test_a_merged_visitor_keeps_the_absorbed_ones_candidates() -> None:
    # with one nearest centroid each: A's and C's nearest is B, B's is A; so C is a
    # candidate of B but not of A. Once A absorbs B (0.95), A+B must still meet C (0.79)
    e = np.eye(16)
    a = e[0]
    b = 0.95 * e[0] + np.sqrt(1 - 0.95**2) * e[1]
    c = 0.7 * e[0] + np.sqrt(1 - 0.49) * e[1]
    clusters = {"V-000001": ClusterStats(a, 1.0, {"f1"}, set()),
                "V-000002": ClusterStats(b, 1.0, {"f2"}, set()),
                "V-000003": ClusterStats(c, 1.0, {"f3"}, set())}
    merged = plan_merges(clusters, 0.6, candidates=1)
    assert [(p.keep, p.absorb) for p in merged] == [("V-000001", "V-000002"),
                                                    ("V-000001", "V-000003")]
    want = float(np.dot(a + b, c) / 2)  # average linkage of A+B with C
    assert merged[1].similarity == pytest.approx(want) and want == pytest.approx(0.794, abs=1e-3)


def test_trimming_keeps_each_visitors_best_exemplars(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    from revisit.identity.consolidate import _trim_exemplars
    from revisit.store.testing import at, batch, sighting

    store.write(batch([sighting("V-000001", at(m), quality=q)
                       for m, q in enumerate((0.5, 0.9, 0.3, 0.7))]))
    _trim_exemplars(make_settings(identity={"max_exemplars": 2}), store, "default")
    kept = sorted(ex.quality for chunk in store.load_exemplars("default") for ex in chunk)
    assert kept == pytest.approx([0.7, 0.9])
