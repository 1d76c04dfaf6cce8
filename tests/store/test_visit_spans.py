"""The visits rollup (``visit_spans``) gives exactly what sessionising the sightings gives,
for every analysis, on every store backend: after shuffled writes (late arrivals that
bridge or split visits, visits across midnight, ties between cameras), merges, splits,
erasures, purges and a rebuild."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from tests.store.test_rollup import START, _apply, _random_steps

from revisit.report.query import ReportQuery
from revisit.store import summary as S
from revisit.store.base import SightingStore
from revisit.store.testing import batch, sighting

STEP = timedelta(seconds=15)


def _history(seed: int) -> list:
    """Visitors moving between three stores' cameras, with gaps around the visit gap,
    visits across midnight and two cameras seeing someone at the same instant."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(10):
        vid = f"V-{v + 1:06X}"
        t = START + timedelta(minutes=float(rng.uniform(0, 1400)))
        loc = "L1"
        for _ in range(int(rng.integers(5, 35))):
            step = rng.choice([0.0, 2.0, 5.0, 29.5, 30.0, 30.5, 240.0, 1439.0])
            t = t + timedelta(minutes=float(step))
            if rng.random() < 0.2:
                loc = f"L{int(rng.integers(1, 4))}"
            cam = f"{loc}-c{int(rng.integers(1, 4))}"
            out.append(sighting(vid, t, location=loc, camera=cam))
            if rng.random() < 0.1:  # a second camera of the store, same instant
                out.append(sighting(vid, t, location=loc, camera=f"{loc}-c9"))
    return out


def _queries() -> list[ReportQuery]:
    qs = []
    for d1, d2 in ((1, 1), (1, 2), (2, 2), (2, 4), (3, 3), (1, 31)):
        for locs in ((), ("L1",), ("L2", "L3")):
            qs.append(ReportQuery(date(2024, 3, d1), date(2024, 3, d2), locations=locs))
    return qs


def _everything(store: SightingStore, q: ReportQuery, rollup: bool) -> dict[str, Any]:
    with store.read() as con, S.sessionised(con, q, rollup=rollup):  # type: ignore[attr-defined]
        out = S.summary(con, q, STEP)
        out["flows"] = S.flows(con, q)
        out["camera_paths"] = S.camera_paths(con, q, top=50)
    return out


def _assert_same(store: SightingStore, part: tuple[int, int] = (0, 1)) -> int:
    """Every analysis both ways, over the queries (``part`` (i, n): every n-th from i)."""
    visits = 0
    i, n = part
    for q in _queries()[i::n]:
        raw = _everything(store, q, rollup=False)
        assert _everything(store, q, rollup=True) == raw, q
        visits += raw["totals"]["visits"]
    return visits


def _spans(store: SightingStore) -> list[tuple]:
    with store.read() as con:  # type: ignore[attr-defined]
        return sorted(con.execute("SELECT * FROM visit_spans").fetchall())


def test_spans_equal_raw_after_shuffled_writes_and_equal_a_rebuild(store: SightingStore) -> None:
    rows = _history(1)
    order = np.random.default_rng(2).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    for i in range(0, len(shuffled), 5):
        store.write(batch(shuffled[i:i + 5]))
    store.write(batch(shuffled[:8]))  # redelivery changes nothing
    assert _assert_same(store) > 100
    kept = _spans(store)
    assert any("\x1f" in path for *_, path in kept)  # visits that moved between cameras
    store.rebuild_rollup()
    assert _spans(store) == kept
    # staff left out: the same on both ways
    from revisit.known.enrol import Enrolments
    from revisit.tenancy.db import Tenancy

    Enrolments(store, Tenancy(store)).enrol_visitor("default", "staff", "V-000003",
                                                    reason="works here")
    assert _assert_same(store) > 0


def test_spans_equal_raw_after_random_merges_splits_erasures_purges(
        store: SightingStore) -> None:
    for seed in (31, 32):
        merged: list[str] = []
        for k, step in enumerate(_random_steps(seed)):
            _apply(store, step, merged)
            _assert_same(store, (k % 8, 8))  # an eighth of the queries after each step, in turn
        _assert_same(store)
        kept = _spans(store)
        store.rebuild_rollup()
        assert _spans(store) == kept
        store.purge_before("default", datetime(2030, 1, 1))
        assert _spans(store) == []


def test_the_rollup_is_what_answers(store: SightingStore) -> None:
    """A wrong rollup would show: lengthen every stored visit and the default-gap dwell
    changes, while a camera-filtered one (sessionised) does not."""
    store.write(batch(_history(4)))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 31))
    cam_q = ReportQuery(q.start, q.end, cameras=("L1-c1",))
    with store.read() as con:  # type: ignore[attr-defined]
        before, cam_before = S.dwell(con, q, STEP), S.dwell(con, cam_q, STEP)
    with store.transaction() as s:  # type: ignore[attr-defined]
        s.execute("UPDATE visit_spans SET end_us = end_us + 3600000000")
    with store.read() as con:  # type: ignore[attr-defined]
        assert S.dwell(con, q, STEP) != before
        assert S.dwell(con, cam_q, STEP) == cam_before
    store.rebuild_rollup()
    with store.read() as con:  # type: ignore[attr-defined]
        assert S.dwell(con, q, STEP) == before


def test_a_late_sighting_bridges_two_visits(store: SightingStore) -> None:
    t = START + timedelta(hours=9)
    store.write(batch([sighting("V-000001", t, camera="L1-a"),
                       sighting("V-000001", t + timedelta(minutes=50), camera="L1-b")]))
    assert sorted((r[5], r[6]) for r in _spans(store)) == [(1, "L1-a"), (1, "L1-b")]
    store.write(batch([sighting("V-000001", t + timedelta(minutes=25), camera="L1-c")]))
    (row,) = _spans(store)
    assert row[5:] == (3, "L1-a\x1fL1-c\x1fL1-b")
    assert row[4] - row[3] == 50 * 60 * 1_000_000
