"""Read the ground truth written by :func:`revisit.simulate.scenario.build_scenario`.

``truth.json`` (format ``revisit-truth/1``)::

    {"format": "revisit-truth/1", "tenant": "default", "visit_gap_s": 1800,
     "spec": {...}, "locations": [...], "cameras": [...],
     "visitors": [{"visitor": "P0001", "identity": "Name", "kind": "once|regular|multi",
                   "stores": ["S01"], "visits": {"S01": 3}, "sightings": 14, ...}],
     "frames": [{"image_id", "image", "camera_id", "location_id", "ts", ["tenant"],
                 "faces": [{"visitor", "identity", "photo", "bbox": [x, y, w, h],
                            "face_height"}]}]}

A ``.jsonl`` truth (one frame object per line, visitors derived) is accepted as well.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from revisit.visits import visits_per_location


@dataclass(slots=True)
class TruthFace:
    visitor: str
    bbox: tuple[int, int, int, int]
    identity: str = ""


@dataclass(slots=True)
class TruthFrame:
    image_id: str
    location_id: str
    ts: datetime
    faces: list[TruthFace] = field(default_factory=list)


@dataclass(slots=True)
class Truth:
    tenant: str
    visit_gap: timedelta
    frames: dict[str, TruthFrame]
    visits: dict[str, dict[str, int]]  # visitor -> {location: visits}
    identities: dict[str, str]  # visitor -> identity name (for people reading the output)

    @property
    def faces(self) -> int:
        return sum(len(f.faces) for f in self.frames.values())


class TruthError(ValueError):
    """A file that is no truth (a manifest, labels, any other JSON): a scorer run on it
    would fail deep inside, or score nothing as 100 %."""


def _frame(obj: dict) -> TruthFrame:
    return TruthFrame(
        image_id=obj["image_id"],
        location_id=obj["location_id"],
        ts=datetime.fromisoformat(obj["ts"]),
        faces=[
            TruthFace(f["visitor"], tuple(int(v) for v in f["bbox"]), f.get("identity", ""))  # type: ignore[arg-type]
            for f in obj.get("faces", [])
        ],
    )


def load_truth(path: Path | str) -> Truth:
    """The truth in ``path``; TruthError names a file that holds none."""
    path = Path(path)
    try:
        return _load(path)
    except TruthError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TruthError(f"{path}: cannot read a truth file ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise TruthError(f"{path} is not a truth file written by `revisit simulate` "
                         f"({what})") from None


def _load(path: Path) -> Truth:
    if path.suffix == ".jsonl":
        objs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        doc: dict = {"frames": objs, "tenant": (objs[0].get("tenant") if objs else None)}
    else:
        doc = json.loads(path.read_text())
    gap = timedelta(seconds=int(doc.get("visit_gap_s", 1800)))
    frames = {f.image_id: f for f in map(_frame, doc["frames"])}
    if not frames:
        raise TruthError(f"{path} holds no frames: nothing to score against")
    identities: dict[str, str] = {}
    seen: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for fr in frames.values():
        for face in fr.faces:
            seen[face.visitor].append((fr.location_id, fr.ts))
            identities.setdefault(face.visitor, face.identity)
    if doc.get("visitors"):
        visits = {v["visitor"]: dict(v["visits"]) for v in doc["visitors"]}
        identities.update({v["visitor"]: v.get("identity", "") for v in doc["visitors"]})
    else:
        visits = {v: visits_per_location(s, gap) for v, s in seen.items()}
    return Truth(doc.get("tenant") or "default", gap, frames, visits, identities)
