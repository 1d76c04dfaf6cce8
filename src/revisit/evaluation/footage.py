"""Score a real clip against labels written by people who looked at its frames.

Simulated scenes know their truth; real footage only has what a person sees. The labels
(``tests/evaluation/footage/*.json``, format in ``FORMAT.md`` there) list, for every frame
``revisit ingest-video --every 0.5s`` samples, each visible face with its person, and the
candidates that are not faces (backs of heads, reflections, objects).

Scoring: each stored sighting is matched to a labelled box of its frame (IoU >= 0.3, one
to one). Then, per found visitor (canonical id), the people it holds:

- **splits**: a person held by more than one visitor (each extra visitor is one split);
- **merges**: a visitor holding two or more people (worse than a split: every report row
  it appears in is wrong);
- **false visitors**: visitors none of whose sightings is a labelled face (a back of a
  head, a reflection, an object, or nothing labelled);
- **missed**: expected people (a non-profile face of at least 12 px in a sampled frame)
  that no visitor holds.

The verdict a customer cares about: found visitors == people by eye, with no split, merge
or false visitor.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from revisit.config import Settings
from revisit.evaluation.matching import MIN_IOU, match_boxes

CLIP_START = datetime(2024, 1, 1, 9, tzinfo=UTC)  # when a scored clip is said to begin
MIN_EXPECTED_HEIGHT = 12  # px: smaller faces are labelled but nobody expects them counted
_NOT_FACE_KINDS = {"back_of_head", "reflection", "poster", "object", "other"}
_VIEWS = {"frontal", "turned", "profile", "down"}


class LabelError(ValueError):
    """A label file that does not follow FORMAT.md."""


@dataclass(frozen=True, slots=True)
class LabelledFace:
    person: str
    box: tuple[float, float, float, float]
    view: str = "frontal"

    @property
    def expected(self) -> bool:
        return self.view != "profile" and self.box[3] >= MIN_EXPECTED_HEIGHT


@dataclass(frozen=True, slots=True)
class NotFace:
    kind: str
    box: tuple[float, float, float, float]


@dataclass(slots=True)
class FootageLabels:
    clip: str  # relative to the shared data folder
    every_s: float
    people: dict[str, str]
    frames: dict[int, tuple[list[LabelledFace], list[NotFace]]]  # t_ms -> labels
    notes: str = ""

    def frame_at(self, t_ms: float, tolerance_ms: float = 25.0) -> int | None:
        """The labelled frame sampled at ``t_ms`` (video time), if any."""
        best = min(self.frames, key=lambda t: abs(t - t_ms), default=None)
        return best if best is not None and abs(best - t_ms) <= tolerance_ms else None

    def expected_people(self, every_s: float) -> set[str]:
        """People with an expected face in the frames sampled every ``every_s``."""
        return {f.person for t in self.sampled(every_s) for f in self.frames[t][0] if f.expected}

    def sampled(self, every_s: float) -> list[int]:
        """Labelled frames that sampling every ``every_s`` (a multiple of ``self.every_s``)
        yields: the first frame at or after each multiple of the step."""
        step = every_s * 1000.0
        out: list[int] = []
        next_ms = 0.0
        for t in sorted(self.frames):
            if t + 1e-6 >= next_ms:
                out.append(t)
                next_ms = (t // step + 1) * step
        return out


def _box(value: Any, where: str) -> tuple[float, float, float, float]:
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int | float) for v in value)):
        raise LabelError(f"{where}: box must be [x, y, w, h], got {value!r}")
    x, y, w, h = (float(v) for v in value)
    if w <= 0 or h <= 0:
        raise LabelError(f"{where}: box {value!r} has no area")
    return (x, y, w, h)


def load_labels(path: Path | str) -> FootageLabels:
    """Read and check one label file (every face names a listed person, boxes are boxes)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: {exc}") from None
    try:
        people = {str(k): str(v) for k, v in raw["people"].items()}
        frames: dict[int, tuple[list[LabelledFace], list[NotFace]]] = {}
        for i, fr in enumerate(raw["frames"]):
            t = round(float(fr["t_ms"]))
            faces = []
            for j, f in enumerate(fr.get("faces", [])):
                where = f"{path.name}: frame {t} ms, face {j}"
                if f["person"] not in people:
                    raise LabelError(f"{where}: person {f['person']!r} is not in 'people'")
                view = f.get("view", "frontal")
                if view not in _VIEWS:
                    raise LabelError(f"{where}: view {view!r} is not one of {sorted(_VIEWS)}")
                faces.append(LabelledFace(f["person"], _box(f["box"], where), view))
            nots = []
            for j, n in enumerate(fr.get("not_faces", [])):
                where = f"{path.name}: frame {t} ms, not_face {j}"
                if n["kind"] not in _NOT_FACE_KINDS:
                    raise LabelError(f"{where}: kind {n['kind']!r} is not one of "
                                     f"{sorted(_NOT_FACE_KINDS)}")
                nots.append(NotFace(n["kind"], _box(n["box"], where)))
            if t in frames:
                raise LabelError(f"{path.name}: frame {t} ms is listed twice (entry {i})")
            frames[t] = (faces, nots)
        return FootageLabels(clip=str(raw["clip"]), every_s=float(raw.get("every_s", 0.5)),
                             people=people, frames=frames, notes=str(raw.get("notes", "")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, LabelError):
            raise
        raise LabelError(f"{path}: not a label file ({exc!r})") from None


@dataclass(slots=True)
class FootageScore:
    """What one run on one clip got right and wrong (module docstring)."""

    clip: str
    every_s: float
    people_by_eye: int
    visitors_found: int
    splits: int
    merges: int
    false_visitors: int
    missed: list[str]
    optional_found: int = 0  # labelled people nobody expects (profile only, tiny) yet found
    visitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    faces_labelled: int = 0
    faces_found: int = 0
    false_sightings: Counter = field(default_factory=Counter)
    recall_by_height: dict[str, list[int]] = field(default_factory=dict)  # bucket -> [found, all]

    @property
    def exact(self) -> bool:
        """One visitor per person, nobody missed, nothing that is not a person."""
        return not (self.splits or self.merges or self.false_visitors or self.missed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clip": self.clip, "every_s": self.every_s, "people_by_eye": self.people_by_eye,
            "visitors_found": self.visitors_found, "splits": self.splits, "merges": self.merges,
            "false_visitors": self.false_visitors, "missed": self.missed,
            "optional_found": self.optional_found, "exact": self.exact,
            "faces_labelled": self.faces_labelled, "faces_found": self.faces_found,
            "false_sightings": dict(self.false_sightings),
            "recall_by_height": self.recall_by_height, "visitors": self.visitors,
        }

    def line(self) -> str:
        return (f"{self.clip} @ {self.every_s:g}s: people by eye {self.people_by_eye}, "
                f"visitors {self.visitors_found}, splits {self.splits}, merges {self.merges}, "
                f"false {self.false_visitors}, missed {len(self.missed)}"
                + (f", {self.optional_found} not expected but found" if self.optional_found else "")
                + ("  EXACT" if self.exact else ""))


_HEIGHT_BUCKETS = ((0, 12), (12, 20), (20, 30), (30, 40), (40, 60), (60, 10_000))


def _bucket(h: float) -> str:
    for lo, hi in _HEIGHT_BUCKETS:
        if lo <= h < hi:
            return f"{lo}-{hi}" if hi < 10_000 else f">={lo}"
    return "?"


def score_sightings(
    labels: FootageLabels, every_s: float, sightings: Iterable[dict[str, Any]], start: datetime
) -> FootageScore:
    """Score stored sightings (rows with ``face_id``, ``ts``, ``bbox_*``) of one ingest of the
    clip that began at ``start`` and sampled every ``every_s``."""
    frames = labels.sampled(every_s)
    by_frame: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in sightings:
        ts = row["ts"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=start.tzinfo)
        t = labels.frame_at((ts - start) / timedelta(milliseconds=1))
        by_frame[t if t is not None else -1].append(row)
    holds: dict[str, Counter] = defaultdict(Counter)  # visitor -> person/false kind -> n
    false_sightings: Counter = Counter()
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    faces_labelled = faces_found = 0
    for t in frames:
        faces, nots = labels.frames[t]
        rows = by_frame.get(t, [])
        boxes = [(float(r["bbox_x"]), float(r["bbox_y"]), float(r["bbox_w"]), float(r["bbox_h"]))
                 for r in rows]
        pairs = match_boxes([f.box for f in faces], boxes, MIN_IOU)
        matched = {c: faces[r].person for r, c, _ in pairs}
        found_faces = {r for r, _, _ in pairs}
        for i, f in enumerate(faces):
            b = recall[_bucket(f.box[3])]
            b[1] += 1
            b[0] += i in found_faces
        faces_labelled += len(faces)
        faces_found += len(found_faces)
        rest = [c for c in range(len(rows)) if c not in matched]
        not_pairs = match_boxes([n.box for n in nots], [boxes[c] for c in rest], MIN_IOU)
        kinds = {rest[c]: nots[r].kind for r, c, _ in not_pairs}
        for c, row in enumerate(rows):
            what = matched.get(c) or kinds.get(c, "unlabelled")
            holds[row["face_id"]][what] += 1
            if c not in matched:
                false_sightings[what] += 1
    for row in by_frame.get(-1, []):  # a sighting in a frame that is not labelled
        holds[row["face_id"]]["unlabelled_frame"] += 1
        false_sightings["unlabelled_frame"] += 1
    persons = set(labels.people)
    visitors: dict[str, dict[str, Any]] = {}
    person_visitors: dict[str, set[str]] = defaultdict(set)
    merges = false_visitors = 0
    for vid, held in sorted(holds.items()):
        people = sorted(p for p in held if p in persons)
        for p in people:
            person_visitors[p].add(vid)
        merges += len(people) > 1
        false_visitors += not people
        visitors[vid] = {"people": people, "sightings": dict(held)}
    splits = sum(len(v) - 1 for v in person_visitors.values())
    expected = labels.expected_people(every_s)
    missed = sorted(expected - set(person_visitors))
    optional = len(set(person_visitors) - expected)
    return FootageScore(
        clip=labels.clip, every_s=every_s, people_by_eye=len(expected),
        visitors_found=len(holds), splits=splits, merges=merges, false_visitors=false_visitors,
        missed=missed, optional_found=optional, visitors=visitors,
        faces_labelled=faces_labelled, faces_found=faces_found,
        false_sightings=false_sightings,
        recall_by_height={k: v for k, v in sorted(recall.items())},
    )


def run_clip(labels: FootageLabels, every_s: float, settings: Settings, shared: Path,
             start: datetime | None = None) -> FootageScore:
    """Ingest the labelled clip with ``settings`` (a fresh data directory in them) the way
    ``revisit ingest-video --every`` does, consolidate, and score what was stored.
    ``start`` (default: 09:00 UTC yesterday) must be within the tenant's retention, or
    every snapshot is refused at the door."""
    from revisit.ingest.video import sample_video
    from revisit.pipeline import Runtime
    from revisit.report.query import SightingQuery

    if start is None:
        start = (datetime.now(UTC) - timedelta(days=1)).replace(hour=9, minute=0, second=0,
                                                              microsecond=0)
    clip = shared / labels.clip
    if not clip.is_file():
        raise LabelError(f"clip {clip} not found (labels name {labels.clip!r})")
    runtime = Runtime(settings)
    try:
        runtime.ingest(sample_video(str(clip), camera_id="cam", location_id="clip",
                                    every=timedelta(seconds=every_s), start=start))
        rows = list(runtime.store.sightings(SightingQuery()))
    finally:
        runtime.close()
    return score_sightings(labels, every_s, rows, start)
