"""Compare what the pipeline stored with the ground truth of a simulated scenario.

Steps: match stored sightings to truth faces per frame by box IoU (>= 0.3, one-to-one);
score detection; score identity on the matched sightings (BCubed, pairwise), count
unique visitors, check per-store visit counts with the report's visit rule, list the
worst over-merges and splits; then re-cluster the same stored embeddings offline with
the best threshold in hindsight, as a reference to read the pipeline's figures against.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from revisit.evaluation import metrics
from revisit.evaluation.matching import MIN_IOU, match_boxes
from revisit.evaluation.reference import MAX_ITEMS, sweep
from revisit.evaluation.truth import Truth
from revisit.visits import visits_per_location


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def visit_accuracy(
    true_visits: Mapping[str, Mapping[str, int]],
    matched_truth: Sequence[str],
    matched_pred: Sequence[Hashable],
    pred_sightings: Mapping[Hashable, Sequence[tuple[str, datetime]]],
    gap: timedelta,
) -> dict[str, Any]:
    """Share of true visitors whose per-store visit counts the prediction gets exactly.

    A true visitor's predicted counterpart is the predicted visitor holding most of its
    matched sightings; its visits are counted from ALL its sightings (so over-merged
    strangers add visits) with the same rule as the truth. Visitors never matched count
    as wrong.
    """
    owner = metrics.majority_map(matched_truth, matched_pred)
    exact = 0
    wrong: list[dict[str, Any]] = []
    for visitor, visits in sorted(true_visits.items()):
        pred = owner.get(visitor)
        found = visits_per_location(pred_sightings.get(pred, ()), gap) if pred is not None else {}
        if dict(visits) == found:
            exact += 1
        else:
            wrong.append({"visitor": visitor, "predicted": pred, "true": dict(visits),
                          "found": found})
    n = len(true_visits)
    found_total = sum(
        sum(visits_per_location(s, gap).values()) for s in pred_sightings.values()
    )
    return {
        "exact_share": exact / n if n else 1.0,
        "exact": exact,
        "visitors": n,
        "true_visits": sum(sum(v.values()) for v in true_visits.values()),
        "found_visits": found_total,
        "wrong": wrong,
    }


def _identity_block(
    truth: Truth,
    matched_truth: list[str],
    matched_pred: list[Hashable],
    pred_sightings: Mapping[Hashable, Sequence[tuple[str, datetime]]],
    top: int,
) -> dict[str, Any]:
    found = len(pred_sightings)
    true_n = len(truth.visits)
    va = visit_accuracy(truth.visits, matched_truth, matched_pred, pred_sightings, truth.visit_gap)
    merged = metrics.over_merges(matched_truth, matched_pred, None)
    split = metrics.splits(matched_truth, matched_pred, None)
    return {
        "unique_visitors": {
            "true": true_n, "found": found, "error_pct": metrics.count_error(true_n, found),
        },
        "bcubed": metrics.bcubed(matched_truth, matched_pred).as_dict(),
        "pairwise": metrics.pairwise(matched_truth, matched_pred).as_dict(),
        "visits": {k: v for k, v in va.items() if k != "wrong"},
        "visit_errors": va["wrong"][:top],
        "over_merged_clusters": len(merged),
        "split_identities": len(split),
        "over_merges": merged[:top],
        "splits": split[:top],
    }


def evaluate(
    truth: Truth,
    sightings: Iterable[Mapping[str, Any]],
    embeddings: Mapping[str, np.ndarray] | None = None,
    top: int = 10,
    min_iou: float = MIN_IOU,
) -> dict[str, Any]:
    """All figures as one JSON-ready dict (see module doc). ``sightings`` are store rows
    (face_id, face_image_id, image_id, location_id, ts, bbox_x/y/w/h); ``embeddings`` maps
    face_image_id to its stored embedding (None: no offline reference)."""
    by_frame: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    outside = 0
    for s in sightings:
        if s["image_id"] in truth.frames:
            by_frame[s["image_id"]].append(s)
        else:
            outside += 1
    n_sightings = sum(len(v) for v in by_frame.values())

    matched_truth: list[str] = []
    matched_pred: list[Hashable] = []
    matched_fid: list[str] = []
    all_rows: list[Mapping[str, Any]] = []
    for image_id, fr in truth.frames.items():
        rows = by_frame.get(image_id, [])
        all_rows.extend(rows)
        boxes = [(r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]) for r in rows]
        for ti, fi, _ in match_boxes([f.bbox for f in fr.faces], boxes, min_iou):
            matched_truth.append(fr.faces[ti].visitor)
            matched_pred.append(rows[fi]["face_id"])
            matched_fid.append(rows[fi]["face_image_id"])
    n_truth = truth.faces
    n_match = len(matched_truth)

    pred_sightings: dict[Hashable, list[tuple[str, datetime]]] = defaultdict(list)
    for r in all_rows:
        pred_sightings[r["face_id"]].append((r["location_id"], _ts(r["ts"])))

    result: dict[str, Any] = {
        "tenant": truth.tenant,
        "visit_gap_min": truth.visit_gap.total_seconds() / 60,
        "frames": len(truth.frames),
        "truth_faces": n_truth,
        "sightings": n_sightings,
        "sightings_outside_truth": outside,
        "detection": {
            "matched": n_match,
            "missed": n_truth - n_match,
            "unmatched_sightings": n_sightings - n_match,
            "recall": n_match / n_truth if n_truth else 1.0,
            "precision": n_match / n_sightings if n_sightings else 1.0,
            "min_iou": min_iou,
        },
        "pipeline": _identity_block(truth, matched_truth, matched_pred, pred_sightings, top),
    }
    if embeddings is not None:
        result["reference"] = _reference(truth, all_rows, matched_truth, matched_fid,
                                         embeddings, top)
    return result


def _reference(
    truth: Truth,
    rows: list[Mapping[str, Any]],
    matched_truth: list[str],
    matched_fid: list[str],
    embeddings: Mapping[str, np.ndarray],
    top: int,
) -> dict[str, Any]:
    """Offline clustering of every stored face in the truth frames that has an embedding."""
    rows = [r for r in rows if r["face_image_id"] in embeddings]
    method = "agglomerative, cosine, average linkage (best threshold vs truth)"
    if not rows:
        return {"method": method, "skipped": "no stored embeddings for the truth frames"}
    if len(rows) > MAX_ITEMS:
        return {"method": method, "skipped": f"{len(rows)} faces > {MAX_ITEMS} (memory)"}
    pos = {r["face_image_id"]: i for i, r in enumerate(rows)}
    keep = [k for k, fid in enumerate(matched_fid) if fid in pos]
    m_truth = [matched_truth[k] for k in keep]
    m_idx = np.array([pos[matched_fid[k]] for k in keep], dtype=int)
    x = np.stack([np.asarray(embeddings[r["face_image_id"]], np.float32) for r in rows])

    def score(labels: np.ndarray) -> float:
        return metrics.bcubed(m_truth, labels[m_idx].tolist()).f1

    threshold, labels, curve = sweep(x, score)
    pred_sightings: dict[Hashable, list[tuple[str, datetime]]] = defaultdict(list)
    for r, lab in zip(rows, labels, strict=True):
        pred_sightings[f"R{int(lab)}"].append((r["location_id"], _ts(r["ts"])))
    m_pred: list[Hashable] = [f"R{int(v)}" for v in labels[m_idx]]
    block = _identity_block(truth, m_truth, m_pred, pred_sightings, top)
    return {
        "method": method,
        "threshold": threshold,
        "similarity": round(1 - threshold, 4),
        "faces": len(rows),
        **block,
        "sweep": curve,
    }


def summary_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, pipeline, reference) rows for the table view."""
    p = result["pipeline"]
    r = result.get("reference") or {}
    has_r = "bcubed" in r

    def both(get) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        return get(p), (get(r) if has_r else "-")

    def pct(v: float) -> str:
        return f"{100 * v:.1f} %"

    rows = [
        ("unique visitors (true)", str(p["unique_visitors"]["true"]),
         str(r["unique_visitors"]["true"]) if has_r else "-"),
        ("unique visitors (found)", *both(lambda b: str(b["unique_visitors"]["found"]))),
        ("unique visitors error", *both(lambda b: f"{b['unique_visitors']['error_pct']:+.1f} %")),
        ("BCubed precision", *both(lambda b: pct(b["bcubed"]["precision"]))),
        ("BCubed recall", *both(lambda b: pct(b["bcubed"]["recall"]))),
        ("BCubed F1", *both(lambda b: pct(b["bcubed"]["f1"]))),
        ("pairwise precision", *both(lambda b: pct(b["pairwise"]["precision"]))),
        ("pairwise recall", *both(lambda b: pct(b["pairwise"]["recall"]))),
        ("pairwise F1", *both(lambda b: pct(b["pairwise"]["f1"]))),
        ("visitors with exact visit counts", *both(lambda b: pct(b["visits"]["exact_share"]))),
        ("visits true / found", *both(
            lambda b: f"{b['visits']['true_visits']} / {b['visits']['found_visits']}")),
        ("over-merged clusters", *both(lambda b: str(b["over_merged_clusters"]))),
        ("split identities", *both(lambda b: str(b["split_identities"]))),
    ]
    return rows


def format_table(result: Mapping[str, Any], identities: Mapping[str, str] | None = None) -> str:
    """Human-readable report: detection, side-by-side identity figures, worst cases."""
    d = result["detection"]
    out = [
        f"frames {result['frames']}, truth faces {result['truth_faces']}, "
        f"stored sightings {result['sightings']} "
        f"(+{result['sightings_outside_truth']} outside the truth frames)",
        f"detection: recall {100 * d['recall']:.1f} % ({d['matched']}/{result['truth_faces']}), "
        f"precision {100 * d['precision']:.1f} % (IoU >= {d['min_iou']})",
        "",
    ]
    r = result.get("reference") or {}
    ref_head = "reference"
    if "threshold" in r:
        ref_head = f"reference (sim >= {r['similarity']:.3f})"
    rows = [("metric", "pipeline", ref_head), *summary_rows(result)]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    for a, b, c in rows:
        out.append(f"{a:<{w0}}  {b:>{w1}}  {c}")
    if "skipped" in r:
        out.append(f"reference skipped: {r['skipped']}")
    names = identities or {}

    def who(v: Any) -> str:
        return f"{v} ({names[v]})" if names.get(v) else str(v)

    p = result["pipeline"]
    if p["over_merges"]:
        out += ["", "worst over-merges (pipeline visitor: true identities with sightings)"]
        for m in p["over_merges"]:
            ids = ", ".join(f"{who(k)}: {n}" for k, n in m["identities"].items())
            out.append(f"  {m['cluster']} [{m['size']}]: {ids}")
    if p["splits"]:
        out += ["", "worst splits (true identity: pipeline visitors with sightings)"]
        for s in p["splits"]:
            cl = ", ".join(f"{k}: {n}" for k, n in s["clusters"].items())
            out.append(f"  {who(s['identity'])} [{s['size']}]: {cl}")
    return "\n".join(out)


def evaluate_store(
    store: Any, truth: Truth, reference: bool = True, top: int = 10
) -> dict[str, Any]:
    """Read the tenant's sightings (and, for the reference, embeddings) from a store."""
    from revisit.report.query import SightingQuery

    rows = [r for r in store.sightings(SightingQuery(tenant=truth.tenant))
            if r["image_id"] in truth.frames]
    embeddings: dict[str, np.ndarray] | None = None
    if reference and hasattr(store, "load_embeddings"):
        wanted = {r["face_image_id"] for r in rows}
        embeddings = {}
        for chunk in store.load_embeddings(truth.tenant):
            for fid, _visitor, emb in chunk:
                if fid in wanted:
                    embeddings[fid] = emb
    return evaluate(truth, rows, embeddings, top=top)
