"""Identity resolution: each embedded face becomes a sighting of a visitor.

For every face the tenant's index returns the nearest stored exemplars; visitors with
neighbours above the match threshold vote (count of close neighbours, then best score),
and the winner becomes the face's visitor id. Otherwise a new visitor is created, but only
from a face that passed the quality gate: a poor face may join a visitor, never found one.
Two faces of one frame never get the same visitor (cannot-link), resolved greedily by score.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from revisit.config import Settings
from revisit.identity.index import FaceIndex, Neighbour
from revisit.records import Batch, Exemplar, Face, Sighting
from revisit.store.base import SightingStore
from revisit.store.visitor_ids import format_visitor_id
from revisit.vision.embed import DEFAULT_MATCH_THRESHOLD

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Gallery:
    """What the resolver remembers of one tenant beyond the index: exemplar bookkeeping."""

    next_number: int
    # visitor -> list of (quality, face_image_id) of its stored exemplars
    exemplars: dict[str, list[tuple[float, str]]] = field(default_factory=dict)


class Resolver:
    """Stateful per tenant; loads each tenant's gallery from the store on first use."""

    def __init__(self, settings: Settings, store: SightingStore, index: FaceIndex) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        ident = settings.identity
        self.threshold = (
            ident.match_threshold
            if ident.match_threshold is not None
            else DEFAULT_MATCH_THRESHOLD[settings.embedder.model]
        )
        self.k = ident.neighbours
        self.max_exemplars = ident.max_exemplars
        self._galleries: dict[str, _Gallery] = {}

    # -- gallery state ---------------------------------------------------------------
    def _gallery(self, tenant: str) -> _Gallery:
        g = self._galleries.get(tenant)
        if g is None:
            g = _Gallery(next_number=self.store.max_visitor_number(tenant) + 1)
            for chunk in self.store.load_exemplars(tenant):
                self.index.add(chunk)
                for ex in chunk:
                    g.exemplars.setdefault(ex.visitor_id, []).append((ex.quality, ex.face_image_id))
            self._galleries[tenant] = g
        return g

    def _new_visitor(self, tenant: str) -> str:
        g = self._gallery(tenant)
        vid = format_visitor_id(g.next_number)
        g.next_number += 1
        return vid

    def _remember(self, batch: Batch, face: Face, visitor: str) -> None:
        """Keep the face as an exemplar if the visitor has room or it beats the worst one."""
        assert face.embedding is not None
        g = self._gallery(face.tenant)
        held = g.exemplars.setdefault(visitor, [])
        if len(held) >= self.max_exemplars:
            worst = min(held)
            if face.quality <= worst[0]:
                return
            held.remove(worst)
            self.index.remove(face.tenant, [worst[1]])
            batch.exemplars_dropped.append((face.tenant, worst[1]))
        held.append((face.quality, face.face_image_id))
        ex = Exemplar(
            face.tenant, visitor, face.face_image_id, face.embedding, face.quality, face.ts
        )
        self.index.add([ex])
        batch.exemplars_added.append(ex)

    # -- decisions -------------------------------------------------------------------
    def _candidates(self, hits: list[Neighbour]) -> list[tuple[str, float]]:
        """Visitors among the close neighbours, most votes first, then best score."""
        votes: dict[str, list[float]] = defaultdict(list)
        for h in hits:
            if h.score >= self.threshold:
                votes[h.visitor_id].append(h.score)
        ranked = sorted(votes.items(), key=lambda kv: (-len(kv[1]), -max(kv[1]), kv[0]))
        return [(vid, max(scores)) for vid, scores in ranked]

    def resolve(self, batch: Batch) -> Batch:
        """Fill ``batch.sightings`` for every embedded face; frames are handled in time order."""
        faces = [f for f in batch.faces if f.embedding is not None]
        by_frame: dict[str, list[Face]] = defaultdict(list)
        for f in faces:
            by_frame[f.frame_key].append(f)
        frames = sorted(by_frame.values(), key=lambda fs: (fs[0].ts, fs[0].image_id))
        for tenant in {f.tenant for f in faces}:
            self._gallery(tenant)
        known = self._already_stored(faces)
        for frame_faces in frames:
            self._resolve_frame(batch, frame_faces, known)
        return batch

    def _already_stored(self, faces: Iterable[Face]) -> dict[str, str]:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for f in faces:
            by_tenant[f.tenant].append(f.face_image_id)
        known: dict[str, str] = {}
        for tenant, ids in by_tenant.items():
            known.update(self.store.existing_sightings(tenant, ids))
        return known

    def _resolve_frame(self, batch: Batch, faces: list[Face], known: dict[str, str]) -> None:
        tenant = faces[0].tenant
        emb = np.stack([f.embedding for f in faces])  # type: ignore[misc]
        hits = self.index.search(tenant, emb, self.k)
        taken: set[str] = set()
        assignment: dict[int, tuple[str, float, bool]] = {}
        # redelivered faces keep the visitor they were stored with
        for i, f in enumerate(faces):
            if f.face_image_id in known:
                vid = known[f.face_image_id]
                assignment[i] = (vid, 1.0, False)
                taken.add(vid)
        # greedy by best candidate score across the frame: strongest matches claim first
        options = []
        for i, h in enumerate(hits):
            if i in assignment:
                continue
            for vid, score in self._candidates(h):
                options.append((score, i, vid))
        options.sort(key=lambda o: (-o[0], o[1], o[2]))
        for score, i, vid in options:
            if i in assignment or vid in taken:
                continue
            assignment[i] = (vid, score, False)
            taken.add(vid)
        for i, f in enumerate(faces):
            if i in assignment:
                continue
            if not f.creatable:
                continue  # below the quality bar: may match, never founds a visitor
            vid = self._new_visitor(tenant)
            assignment[i] = (vid, 1.0, True)
            taken.add(vid)
            batch.visitors_created.append((tenant, vid, f.ts))
        for i, (vid, score, new) in sorted(assignment.items()):
            f = faces[i]
            if f.face_image_id not in known and f.creatable:
                self._remember(batch, f, vid)
            batch.sightings.append(
                Sighting(
                    tenant=tenant, face_id=vid, face_image_id=f.face_image_id,
                    image_id=f.image_id, camera_id=f.camera_id, location_id=f.location_id,
                    ts=f.ts, bbox=f.bbox, quality=f.quality, match_score=score,
                    new_visitor=new, embedding=f.embedding,
                )
            )
