"""The analyses on a simulated scenario (``revisit simulate``): its truth's sightings,
stored as the pipeline would store perfect recognition, give what an independent Python
reading of the same truth expects: new / returning, dwell, store affinity, camera paths.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import pytest

from revisit.records import Batch, Frame, Sighting
from revisit.report.query import ReportQuery
from revisit.simulate.scenario import ScenarioSpec, build_scenario, shared_data_dir
from revisit.store import summary as S
from revisit.store.base import SightingStore

FACES = shared_data_dir() / "lfw-dev"
SPEC = ScenarioSpec(stores=3, cameras_per_store=2, days=4, visitors=30, seed=5, workers=1,
                    multi_store_share=0.5, regular_share=0.5)
STEP = timedelta(seconds=SPEC.snapshot_interval_s)
GAP = timedelta(minutes=30)


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not FACES.is_dir():
        pytest.skip(f"{FACES} is missing (../shared/data beside the repo)")
    out = tmp_path_factory.mktemp("scenario")
    build_scenario(FACES, out, SPEC)
    return json.loads((out / "truth.json").read_text())


def _true_sightings(truth: dict) -> list[tuple[str, str, str, datetime]]:
    """(visitor, location, camera, ts) of every face in the truth."""
    return [(face["visitor"], fr["location_id"], fr["camera_id"], datetime.fromisoformat(fr["ts"]))
            for fr in truth["frames"] for face in fr["faces"]]


def _store_truth(store: SightingStore, truth: dict) -> None:
    frames, sightings = [], []
    for i, fr in enumerate(truth["frames"]):
        ts = datetime.fromisoformat(fr["ts"])
        frames.append(Frame("default", fr["camera_id"], fr["location_id"], fr["image_id"], ts))
        for j, face in enumerate(fr["faces"]):
            x, y, w, h = face["bbox"]
            sightings.append(Sighting(
                tenant="default", face_id=face["visitor"], face_image_id=f"F-{i}-{j}",
                image_id=fr["image_id"], camera_id=fr["camera_id"],
                location_id=fr["location_id"], ts=ts, bbox=(x, y, w, h), quality=0.9,
                match_score=0.9))
    store.write(Batch("truth", frames=frames, sightings=sightings))


def _visits(rows: list[tuple[str, str, str, datetime]]) -> list[list[tuple[str, datetime]]]:
    """Sightings split into visits: per (visitor, store), a gap over 30 min starts one."""
    by: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for v, loc, cam, ts in rows:
        by[(v, loc)].append((ts, cam))
    out = []
    for (v, loc), seq in by.items():
        seq.sort()
        current = [seq[0]]
        for prev, nxt in itertools.pairwise(seq):
            if nxt[0] - prev[0] > GAP:
                out.append((v, loc, current))
                current = []
            current.append(nxt)
        out.append((v, loc, current))
    return out  # type: ignore[return-value]


def test_analyses_agree_with_the_scenario_truth(store: SightingStore, truth: dict) -> None:
    _store_truth(store, truth)
    rows = _true_sightings(truth)
    days = sorted({ts.astimezone().date() for *_, ts in rows})
    start = min(ts for *_, ts in rows).astimezone().date()
    # the period: from the second day, so some visitors were seen before it
    q_from = date.fromordinal(start.toordinal() + 1)
    q = ReportQuery(q_from, date.fromordinal(start.toordinal() + SPEC.days), visit_gap=GAP)
    in_period = [r for r in rows if q.ts_from <= r[3] < q.ts_to]
    assert days and in_period
    visits = _visits(in_period)
    with store.read() as con:  # type: ignore[attr-defined]
        totals = S.totals(con, q)
        dwell = S.dwell(con, q, STEP)
        flows = S.flows(con, q)
        paths = S.camera_paths(con, q, top=1000)

    # new / returning
    before = {v for v, *_rest, ts in rows if ts < q.ts_from}
    visitors = {v for v, *_ in in_period}
    per_visitor = Counter(v for v, _loc, _seq in visits)
    assert totals["unique_visitors"] == len(visitors)
    assert totals["visits"] == len(visits)
    assert totals["previously_seen"] == len(visitors & before)
    assert totals["new_visitors"] == len(visitors - before)
    assert totals["repeat_visitors"] == sum(1 for n in per_visitor.values() if n >= 2)

    # dwell: median per store of (last - first + one interval)
    durations: dict[str, list[float]] = defaultdict(list)
    for _v, loc, seq in visits:
        durations[loc].append((seq[-1][0] - seq[0][0] + STEP).total_seconds())
    got = {d["location_id"]: d for d in dwell["locations"]}
    for loc, ds in durations.items():
        assert got[loc]["visits"] == len(ds)
        assert got[loc]["median_s"] == pytest.approx(statistics.median(ds), abs=0.1)

    # store affinity
    stores_of: dict[str, set[str]] = defaultdict(set)
    for v, loc, _cam, _ts in in_period:
        stores_of[v].add(loc)
    expect = []
    for a in sorted({loc for s in stores_of.values() for loc in s}):
        of_a = [v for v, s in stores_of.items() if a in s]
        for b in sorted({loc for s in stores_of.values() for loc in s} - {a}):
            both = sum(1 for v in of_a if b in stores_of[v])
            if both:
                expect.append({"from": a, "to": b, "visitors": both,
                               "share": round(both / len(of_a), 4)})
    assert flows["affinity"] == expect
    assert any(x["visitors"] for x in expect)  # the scenario has multi-store visitors

    # camera paths: per visit, its cameras in time order, repeats collapsed
    want: dict[str, Counter] = defaultdict(Counter)
    for _v, loc, seq in visits:
        cams = [cam for _ts, cam in sorted(seq)]
        path = [c for i, c in enumerate(cams) if i == 0 or c != cams[i - 1]]
        want[loc][tuple(path)] += 1
    for p in paths:
        assert {tuple(x["path"]): x["visits"] for x in p["paths"]} == dict(want[p["location_id"]])
