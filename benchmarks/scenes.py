"""CCTV-like benchmark frames with ground truth, shared by pipeline.py, peers.py, ingest.py.

640x480 mall backgrounds (../shared/data/mall/frames) with 1-4 LFW faces pasted per frame by
``revisit.simulate.render`` (the scene builder's code), JPEG-encoded like a camera would.
People are drawn from lfw-dev folders with at least ``min_photos`` photos, so each person
comes back several times with different photos: identity assignment has something to get
right. Deterministic for a given seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from revisit.records import Frame, content_id
from revisit.simulate.render import FrameLook, Paste, render_frame

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    env = os.environ.get("REVISIT_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class TruthFace:
    person: str
    box: tuple[int, int, int, int]  # x, y, w, h (detector convention: brow to chin)


@dataclass(frozen=True, slots=True)
class Scene:
    data: bytes  # JPEG
    truth: list[TruthFace]
    camera: int
    ts: datetime


def build_scenes(n_frames: int = 200, people: int = 60, seed: int = 7, min_photos: int = 4,
                 min_face: int = 56, max_face: int = 120, faces: tuple[int, int] = (1, 4),
                 ) -> list[Scene]:
    """``n_frames`` frames, ``faces`` (least, most) faces each, from ``people`` identities."""
    data = shared_data()
    lfw = data / "lfw-dev"
    rng = np.random.default_rng(seed)
    folders = sorted(p for p in lfw.iterdir() if p.is_dir())
    candidates = [(p.name, sorted(p.glob("*.jpg"))) for p in folders]
    candidates = [c for c in candidates if len(c[1]) >= min_photos]
    pick = rng.choice(len(candidates), size=min(people, len(candidates)), replace=False)
    chosen = [candidates[i] for i in sorted(pick)]
    backgrounds = sorted((data / "mall" / "frames").glob("*.jpg"))
    t0 = datetime(2024, 3, 1, 9, tzinfo=UTC)
    scenes: list[Scene] = []
    for i in range(n_frames):
        k = int(rng.integers(faces[0], faces[1] + 1))
        who = rng.choice(len(chosen), size=k, replace=False)
        pastes = []
        for w in who:
            _name, photos = chosen[int(w)]
            pastes.append(Paste(
                photo=str(photos[int(rng.integers(len(photos)))]),
                face_height=int(rng.integers(min_face, max_face + 1)),
                blur_sigma=float(rng.uniform(0.0, 0.8)),
                resolution=float(rng.uniform(0.7, 1.0)),
                gain=float(rng.uniform(0.85, 1.1)),
            ))
        look = FrameLook(
            background=str(backgrounds[int(rng.integers(len(backgrounds)))]),
            flip=bool(rng.integers(2)), gain=float(rng.uniform(0.9, 1.1)),
            bias=float(rng.uniform(-8, 8)), noise_sigma=float(rng.uniform(0, 3)),
            jpeg_quality=int(rng.integers(75, 92)),
        )
        jpeg, boxes = render_frame(look, pastes, np.random.default_rng(seed * 100_003 + i))
        truth = [TruthFace(chosen[int(w)][0], b) for w, b in zip(who, boxes, strict=True)]
        scenes.append(Scene(jpeg, truth, camera=i % 8, ts=t0 + timedelta(seconds=20 * i)))
    return scenes


def to_frames(scenes: list[Scene], tenant: str = "default") -> list[Frame]:
    return [
        Frame(tenant=tenant, camera_id=f"C-{s.camera}", location_id=f"L-{s.camera // 4}",
              image_id=content_id(s.data), ts=s.ts, data=s.data, source=f"scene:{i}")
        for i, s in enumerate(scenes)
    ]


# --- identity accuracy ------------------------------------------------------------------


def match_faces(truth: list[TruthFace], boxes: list[tuple[int, int, int, int]]) -> dict[int, int]:
    """truth index -> detection index, greedily by centre distance; a detection matches a
    truth face when its centre lies inside the truth box (detectors disagree on box shape,
    so IoU would penalise a convention, not a miss)."""
    pairs = []
    for ti, t in enumerate(truth):
        tx, ty, tw, th = t.box
        tcx, tcy = tx + tw / 2, ty + th / 2
        for di, (x, y, w, h) in enumerate(boxes):
            cx, cy = x + w / 2, y + h / 2
            if tx <= cx <= tx + tw and ty <= cy <= ty + th:
                pairs.append((abs(cx - tcx) + abs(cy - tcy), ti, di))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, ti, di in sorted(pairs):
        if ti not in out and di not in used:
            out[ti] = di
            used.add(di)
    return out


def identity_scores(labels: list[tuple[str, str | None]], n_detections: int) -> dict[str, float]:
    """Scores of a clustering against the truth.

    ``labels``: one (true person, assigned id or None when missed) per truth face.
    Missed faces count as their own singleton cluster. Returns detection recall, B-cubed
    precision/recall/F1 (the identity accuracy figure), unique visitor count found vs true,
    and false detections (detections matching no truth face).
    """
    n = len(labels)
    assigned = [(p, a if a is not None else f"__miss{i}") for i, (p, a) in enumerate(labels)]
    by_pred: dict[str, list[str]] = {}
    by_true: dict[str, list[str]] = {}
    for p, a in assigned:
        by_pred.setdefault(a, []).append(p)
        by_true.setdefault(p, []).append(a)
    prec = rec = 0.0
    for p, a in assigned:
        same_pred = by_pred[a]
        same_true = by_true[p]
        inter = sum(1 for q in same_pred if q == p)
        prec += inter / len(same_pred)
        rec += inter / len(same_true)
    prec /= max(1, n)
    rec /= max(1, n)
    found = sum(1 for _, a in labels if a is not None)
    return {
        "truth_faces": n,
        "detected": found,
        "detection_recall": found / max(1, n),
        "false_detections": n_detections - found,
        "bcubed_precision": prec,
        "bcubed_recall": rec,
        "identity_f1": 2 * prec * rec / max(1e-12, prec + rec),
        "true_people": len(by_true),
        "found_ids": len({a for _, a in labels if a is not None}),
    }
