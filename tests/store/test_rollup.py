"""The visit_days rollup gives exactly the raw report's numbers, on every store backend.

Sightings are written in shuffled batches (late arrivals across midnight, gaps of exactly
the visit gap, ties, redeliveries), then every report is asked twice: through the rollup
and through the raw sessionisation (``use_rollup = False``). Also after merges (mixed
rollup + raw), a split, an erasure and a full rebuild.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from revisit.report.query import ReportQuery
from revisit.store.base import SightingStore
from revisit.store.testing import batch, sighting

START = datetime(2024, 3, 1, tzinfo=UTC)


def _history(seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for v in range(12):
        vid = f"V-{v + 1:06X}"
        t = START + timedelta(minutes=float(rng.uniform(0, 600)))
        for _ in range(int(rng.integers(5, 40))):
            # gaps around the 30-minute visit gap (exactly 30 min too), hours, days
            step = rng.choice([0.0, 5.0, 29.5, 30.0, 30.5, 240.0, 23 * 60.0, 1439.0, 1441.0])
            t = t + timedelta(minutes=float(step))
            loc = f"L{int(rng.integers(1, 4))}"
            out.append(sighting(vid, t, location=loc))
    # a visit straddling midnight, with a tie at the first sighting after midnight
    midnight = datetime(2024, 3, 3, tzinfo=UTC)
    for m in (-20, -1, 0, 0, 15, 44):
        out.append(sighting("V-000001", midnight + timedelta(minutes=m), location="L1"))
    return out


def _queries() -> list[ReportQuery]:
    qs = []
    for d1, d2 in ((1, 1), (1, 3), (2, 3), (3, 3), (2, 20), (1, 31), (4, 9)):
        for locs in ((), ("L1",), ("L2", "L3")):
            qs.append(ReportQuery(date(2024, 3, d1), date(2024, 3, d2), locations=locs))
    return qs


def _report(store: SightingStore, q: ReportQuery, rollup: bool):
    store.use_rollup = rollup
    try:
        return store.report_header(q), list(store.report_rows(q))
    finally:
        store.use_rollup = True


def _assert_same(store: SightingStore, part: tuple[int, int] = (0, 1)) -> int:
    """Rollup and raw reports equal over the queries (``part`` (i, n): every n-th from i)."""
    checked = 0
    i, n = part
    for q in _queries()[i::n]:
        raw = _report(store, q, rollup=False)
        rolled = _report(store, q, rollup=True)
        assert rolled == raw, q
        checked += raw[0].total_visits
    return checked


def _corrupt(store: SightingStore, sql: str) -> None:
    with store.transaction() as s:
        s.execute(sql)


def test_rollup_equals_raw_after_out_of_order_writes(store: SightingStore) -> None:
    rows = _history(1)
    rng = np.random.default_rng(2)
    order = rng.permutation(len(rows))
    shuffled = [rows[i] for i in order]
    for i in range(0, len(shuffled), 7):
        store.write(batch(shuffled[i:i + 7]))
    store.write(batch(shuffled[:10]))  # redelivery changes nothing
    assert _assert_same(store) > 50


def test_rollup_equals_raw_after_merge_split_erase_rebuild(store: SightingStore) -> None:
    rows = _history(3)
    for i in range(0, len(rows), 11):
        store.write(batch(rows[i:i + 11]))
    store.merge_visitors("default", "V-000001", "V-000002")
    store.merge_visitors("default", "V-000003", "V-000004")
    _assert_same(store)
    # writes after a merge, by the absorbed id
    store.write(batch([sighting("V-000002", START + timedelta(days=2, minutes=3))]))
    _assert_same(store)
    store.split_visitor("default", "V-000004")
    _assert_same(store)
    store.erase_visitor("default", "V-000005")
    _assert_same(store)
    store.rebuild_rollup()
    _assert_same(store)


def test_rollup_is_used_and_raw_fallbacks(store: SightingStore) -> None:
    """A rollup that is wrong would show: corrupt it and the default-gap report changes,
    while camera-filtered and other-gap reports (raw) do not."""
    rows = _history(5)
    store.write(batch(rows))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 31))
    before = store.report_header(q)
    cam_q = ReportQuery(q.start, q.end, cameras=("L1-cam1",))
    gap_q = ReportQuery(q.start, q.end, visit_gap=timedelta(minutes=10))
    cam_before, gap_before = store.report_header(cam_q), store.report_header(gap_q)
    _corrupt(store, "UPDATE visit_days SET visits = visits + 1")
    assert store.report_header(q).total_visits > before.total_visits
    assert store.report_header(cam_q) == cam_before
    assert store.report_header(gap_q) == gap_before
    store.rebuild_rollup()
    assert store.report_header(q) == before


def test_duckdb_bounds_from_settings(tmp_path: Path) -> None:
    from revisit.backends import open_store
    from revisit.config import Settings

    s = open_store(Settings(data=tmp_path, store={"duckdb_memory_limit": "1GB",
                                                  "duckdb_threads": 1}))
    try:
        limit, threads = s.connection.execute(  # type: ignore[attr-defined]
            "SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
        assert limit == "953.6 MiB" and int(threads) == 1
    finally:
        s.close()


def test_purge_keeps_the_rollup_true_and_purging_everything_leaves_nothing(
        store: SightingStore) -> None:
    from revisit.report.query import SightingQuery
    from revisit.store.summary import summary

    rows = _history(5)
    for i in range(0, len(rows), 9):
        store.write(batch(rows[i:i + 9]))
    store.merge_visitors("default", "V-000001", "V-000002")
    # retention in the middle of the history (and of a visit straddling midnight)
    counts, dropped = store.purge_before("default", datetime(2024, 3, 3, 0, 10))
    assert counts["sightings"] > 0 and dropped
    assert _assert_same(store) > 0
    assert all(r["ts"] >= "2024-03-03T00:10" for r in store.sightings(SightingQuery()))
    # everything: every report, the summary and the export are empty, rollup or raw
    store.purge_before("default", datetime(2030, 1, 1))
    q = ReportQuery(date(2024, 3, 1), date(2024, 4, 30))
    for rollup in (True, False):
        header, rows_out = _report(store, q, rollup)
        assert (header.unique_visitors, header.total_visits, header.total_sightings) == (0, 0, 0)
        assert rows_out == []
    assert list(store.sightings(SightingQuery())) == []
    with store.read() as con:
        totals = summary(con, q)["totals"]
    assert (totals["unique_visitors"], totals["visits"], totals["sightings"]) == (0, 0, 0)
    assert store.stats("default")["visitors"] == 0


def _random_steps(seed: int) -> list[tuple[str, object]]:
    """A random sequence of ingest / merge / split / erase / purge steps over _history."""
    rng = np.random.default_rng(seed)
    rows = _history(7)
    pending = [rows[i] for i in rng.permutation(len(rows))]
    visitors = sorted({r.face_id for r in rows})
    steps: list[tuple[str, object]] = []
    for _ in range(14):
        action = str(rng.choice(["write", "write", "merge", "split", "erase", "purge"]))
        if action == "write":
            steps.append((action, pending[:25]))
            pending = pending[25:]
        elif action == "merge":
            steps.append((action, tuple(str(v) for v in rng.choice(visitors, 2, replace=False))))
        elif action == "erase":
            steps.append((action, str(rng.choice(visitors))))
        elif action == "purge":
            steps.append((action, (START + timedelta(hours=float(rng.uniform(0, 72))))
                          .replace(tzinfo=None)))
        else:
            steps.append((action, None))
    return steps


def _apply(store: SightingStore, step: tuple[str, object], merged: list[str]) -> None:
    action, arg = step
    try:
        if action == "write" and arg:
            store.write(batch(arg))  # type: ignore[arg-type]
        elif action == "merge":
            keep, absorb = arg  # type: ignore[misc]
            store.merge_visitors("default", keep, absorb)
            merged.append(absorb)
        elif action == "split" and merged:
            store.split_visitor("default", merged.pop())
        elif action == "erase":
            store.erase_visitor("default", arg)  # type: ignore[arg-type]
        elif action == "purge":
            store.purge_before("default", arg)  # type: ignore[arg-type]
    except (KeyError, ValueError):
        pass  # e.g. merging a visitor not written yet, or already erased


def test_random_sequences_of_writes_merges_splits_erasures_and_purges(
        store: SightingStore) -> None:
    """Property-style: after every step of random sequences of ingest, merge, split, erase
    and purge, the rollup report equals the raw report, over many queries."""
    for seed in (11, 12, 13):
        merged: list[str] = []
        for k, step in enumerate(_random_steps(seed)):
            _apply(store, step, merged)
            _assert_same(store, (k % 4, 4))  # a quarter of the queries after each step, in turn
        _assert_same(store)
        store.purge_before("default", datetime(2030, 1, 1))


def test_both_stores_give_the_same_answers_after_every_step(tmp_path: Path) -> None:
    from revisit.store.testing import STORE_BACKENDS

    stores = [STORE_BACKENDS[name](tmp_path / name) for name in sorted(STORE_BACKENDS)]
    try:
        merged: list[list[str]] = [[] for _ in stores]
        for k, step in enumerate(_random_steps(21)):
            for store, m in zip(stores, merged, strict=True):
                _apply(store, step, m)
            # half the queries after each step, in turn
            answers = [[_report(s, q, rollup=True) for q in _queries()[k % 2::2]]
                       for s in stores]
            assert all(a == answers[0] for a in answers[1:]), step[0]
    finally:
        for s in stores:
            s.close()


def _visits(store: SightingStore, d1: int, d2: int, rollup: bool) -> int:
    return _report(store, ReportQuery(date(2024, 3, d1), date(2024, 3, d2)), rollup)[0].total_visits


def test_a_late_sighting_before_midnight_makes_the_next_days_first_one_a_continuation(
    store: SightingStore,
) -> None:
    # 00:10 on the 2nd arrives first, then 23:50 on the 1st: one visit across midnight,
    # so the 2nd's rollup row (written by the first batch) must be recomputed
    store.write(batch([sighting("V-000001", datetime(2024, 3, 2, 0, 10, tzinfo=UTC))]))
    store.write(batch([sighting("V-000001", datetime(2024, 3, 1, 23, 50, tzinfo=UTC))]))
    for rollup in (True, False):
        assert _visits(store, 1, 2, rollup) == 1
        assert _visits(store, 2, 2, rollup) == 1  # the raw query cuts the visit at midnight


def test_a_sighting_after_midnight_continues_the_visit_stored_the_day_before(
    store: SightingStore,
) -> None:
    # 23:50 on the 1st is stored, then 00:10 on the 2nd: recomputing the 2nd must see
    # the day before, or the continuation counts as a second visit
    store.write(batch([sighting("V-000001", datetime(2024, 3, 1, 23, 50, tzinfo=UTC))]))
    store.write(batch([sighting("V-000001", datetime(2024, 3, 2, 0, 10, tzinfo=UTC))]))
    for rollup in (True, False):
        assert _visits(store, 1, 2, rollup) == 1
        assert _visits(store, 2, 2, rollup) == 1
