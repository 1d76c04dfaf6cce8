"""Identity resolution: each embedded face becomes a sighting of a visitor.

One snapshot of a face is weak evidence (small, blurred, half-turned); a visit leaves
several consecutive snapshots on a camera. So the resolver decides per *track*, not per
face (measured in docs/accuracy.md):

1. **Redelivered faces** keep the visitor they were stored with (idempotence), and that
   visitor is taken in their frame.
2. **Tracks** (:mod:`revisit.identity.tracks`): per camera and in time order, each frame's
   faces join the open tracks of that camera, kept across camera batches, by face
   likeness or by position, motion and clothes. A track never holds two faces of a frame.
3. **A track with a visitor** (decided in an earlier batch) gives all its new faces to
   that visitor, whatever their pose or size: a head turning within a pass cannot create
   a second visitor.
4. **Matching an undecided track**: its pooled embedding (quality-weighted mean of its
   matchable faces) is compared with the centroids of the visitors the face index
   proposes (nearest exemplars); the best centroid at or above the match threshold wins.
   Tracks are decided in order of appearance, so visitors created from this batch are
   visible to the tracks after them and visitor numbers follow first sightings.
5. **Cannot-link**: two faces of one frame never share a visitor: a visitor given to one
   track is barred for every track that shares a frame with it.
6. **Creation**: an unmatched track founds a new visitor only if one of its faces passed
   the quality gate's creation bar, or ``identity.track_create_faces`` of its faces were
   matchable and confidently detected (several fair snapshots of one person are evidence
   enough to count them, though too weak to re-identify them later); then all its faces
   are sightings of it. A track that may be the reflection of a person still in view
   waits for that person's best snapshot (:meth:`Resolver._may_be_twin`). Until then its
   faces are held, for at most ``track_gap_s`` after its last face; a track that closes
   undecided is dropped (reason ``weak_track``). Held faces are also written with their
   batch (``Batch.held``) and deleted with the batch that decides them
   (``Batch.released``): a resolver that starts (after a crash, a reset or a move of the
   tenant to another process) reads them back on the tenant's first batch and continues
   their tracks, so a kill loses no face. The end of a run and a graceful stop save the
   tracks still able to link (:meth:`Resolver.flush`, ``keep_open``), decided where they
   can be, their undecided faces still held: the next start reads them back with the held
   faces and continues them.
7. **Exemplars**: per visitor at most ``max_exemplars`` (best quality kept), at most
   ``exemplars_per_track`` from one track so a visitor's centroid spans visits; only
   faces that passed the creation bar become exemplars.

Splits that survive this (a visitor seen once from afar, then close up) are repaired
afterwards by :mod:`revisit.identity.consolidate` (average-linkage merges, reversible).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from revisit.config import Settings
from revisit.identity.index import FaceIndex
from revisit.identity.tracks import CameraTracks, Track, TrackParams
from revisit.records import (
    EXPIRED,
    STATIC,
    TWIN,
    WEAK_TRACK,
    Batch,
    Dropped,
    Exemplar,
    Face,
    Sighting,
    is_enrolment_exemplar,
)
from revisit.store.base import SightingStore
from revisit.store.visitor_ids import format_visitor_id, visitor_number_or_zero
from revisit.vision.catalog import embedder_facts, match_threshold

log = logging.getLogger(__name__)

# A tiered index (identity/ann_index.py) may answer from its recent exemplars alone when
# one scores this far above the match threshold: the person was seen minutes ago, and the
# full gallery would only add a look-alike (docs/performance.md measures the agreement).
RECENT_MARGIN = 0.1
# A reflection's contrast and sharpness are at most these shares of the person's it shows.
TWIN_CONTRAST = 0.8
TWIN_SHARPNESS = 0.5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # an exemplar carried over in memory: its time


@dataclass(slots=True)
class _Held:
    """One stored exemplar as the resolver remembers it."""

    quality: float
    face_image_id: str
    embedding: np.ndarray


@dataclass(slots=True)
class _Gallery:
    """What the resolver remembers of one tenant beyond the index: exemplars per visitor."""

    next_number: int
    staff: set[str] = field(default_factory=set)  # enrolled staff: a stricter threshold
    exemplars: dict[str, list[_Held]] = field(default_factory=dict)
    _centroids: dict[str, np.ndarray] = field(default_factory=dict)

    def centroid(self, visitor: str) -> np.ndarray | None:
        c = self._centroids.get(visitor)
        if c is None:
            held = self.exemplars.get(visitor)
            if not held:
                return None
            c = held[0].embedding.astype(np.float32, copy=True)
            for h in held[1:]:  # at most max_exemplars: a loop beats np.mean's overhead
                c += h.embedding
            c = _unit(c)
            self._centroids[visitor] = c
        return c

    def changed(self, visitor: str) -> None:
        self._centroids.pop(visitor, None)


class _Pending:
    """Exemplars chosen during one batch, written to the index once at its end. Until
    then they are searched here, so a track sees visitors created by the tracks before it
    (as if each had been added at once)."""

    def __init__(self, dim: int) -> None:
        self.items: list[Exemplar] = []
        self.vecs = np.empty((16, dim), np.float32)
        self.live: list[bool] = []

    def add(self, ex: Exemplar) -> None:
        n = len(self.items)
        if n == len(self.vecs):
            self.vecs = np.concatenate([self.vecs, np.empty_like(self.vecs)])
        self.vecs[n] = ex.embedding
        self.items.append(ex)
        self.live.append(True)

    def discard(self, face_image_id: str) -> bool:
        for i, ex in enumerate(self.items):
            if self.live[i] and ex.face_image_id == face_image_id:
                self.live[i] = False
                return True
        return False

    def visitors_near(self, query: np.ndarray, k: int) -> list[str]:
        n = len(self.items)
        if n == 0:
            return []
        sims = self.vecs[:n] @ query
        order = np.argsort(-sims)[: k + self.live.count(False)]
        return [self.items[i].visitor_id for i in order.tolist() if self.live[i]][:k]

    def exemplars(self) -> list[Exemplar]:
        return [ex for ex, live in zip(self.items, self.live, strict=True) if live]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else v


class Resolver:
    """Stateful per tenant; loads each tenant's gallery from the store on first use."""

    def __init__(self, settings: Settings, store: SightingStore, index: FaceIndex,
                 refuse: Callable[[Batch], object] | None = None) -> None:
        """``refuse``: takes out of a batch, before it is resolved, the frames the store
        must not keep (``RetentionCutoffs.refuse``: past their tenant's retention); every
        pipeline, embedded or distributed, resolves here, so none stores them."""
        self.settings = settings
        self.store = store
        self.index = index
        self.refuse = refuse
        ident = settings.identity
        self.threshold = match_threshold(settings)
        self.track_params = TrackParams(
            gap=timedelta(seconds=ident.track_gap_s),
            motion_s=ident.track_motion_s,
            face_link=self.threshold + ident.track_threshold_offset,
            face_veto=self.threshold + ident.track_veto_offset,
            context_veto=ident.track_context_veto,
            min_det_score=settings.quality.min_det_score,
            static_after=timedelta(seconds=ident.static_after_s),
            link_height=ident.track_link_height,
            veto_faceness=embedder_facts(settings.embedder.model).faceness_veto,
        )
        self.track_create_faces = ident.track_create_faces
        self.twin_threshold = self.threshold + ident.twin_offset
        # below the track veto two faces are different people; above it a track may yet
        # turn out a twin once the other's pooled face settles (_may_be_twin)
        self.twin_wait = self.track_params.face_veto
        self.staff_threshold = self.threshold + ident.staff_margin
        self.create_after = ident.create_after
        self.single_face_quality = ident.single_face_quality
        self.k = ident.neighbours
        self.max_exemplars = ident.max_exemplars
        self.per_track = ident.exemplars_per_track
        self._galleries: dict[str, _Gallery] = {}
        self._cameras: dict[tuple[str, str], CameraTracks] = {}
        # (tenant, face_image_id) of held faces the store has; tenants whose stored held
        # faces were read back (once per tenant, after a start or a reset)
        self._durable: set[tuple[str, str]] = set()
        self._revived: set[str] = set()
        # open tracks whose visitor was erased: followed on, never saved for a next start
        # (their pooled embedding and clothes are the erased person's)
        self._erased_tracks: set[Track] = set()
        # resolve/flush on the pipeline's thread, reload and id allocation also from an
        # admin action (an enrolment) on another: one at a time
        self._lock = threading.RLock()

    # -- gallery state ---------------------------------------------------------------
    def _gallery(self, tenant: str) -> _Gallery:
        g = self._galleries.get(tenant)
        if g is None:
            g = _Gallery(next_number=self.store.max_visitor_number(tenant) + 1,
                         staff=set(self.store.staff(tenant)))
            for chunk in self.store.load_exemplars(tenant):
                self.index.add(chunk)
                for ex in chunk:
                    g.exemplars.setdefault(ex.visitor_id, []).append(
                        _Held(ex.quality, ex.face_image_id, np.asarray(ex.embedding, np.float32))
                    )
            self._galleries[tenant] = g
        return g

    def reload(self, tenant: str) -> None:
        """Rebuild a tenant's gallery from the store (after a merge/split, consolidation),
        keeping what this resolver decided in batches not stored yet: the pipeline stores
        a batch after resolving it, and a merge may land in between (the exemplars and
        new visitors of such a batch reach the store right after)."""
        with self._lock:
            self._reload(tenant, keep_pending=True)

    def _reload(self, tenant: str, keep_pending: bool = False) -> None:
        """``keep_pending``: carry over the exemplars held here that the store does not
        have yet, and the visitors handed out and not stored yet (a reset after a failed
        write does not: those decisions are void)."""
        g = self._galleries.pop(tenant, None)
        if g is not None:  # by face id: entries may still carry a merged-away visitor id
            self.index.remove(tenant, [h.face_image_id for held in g.exemplars.values()
                                       for h in held])
        fresh = self._gallery(tenant)
        stored_top = fresh.next_number - 1  # the highest number the store has issued
        if g is not None:  # numbers handed out but not yet stored stay taken
            fresh.next_number = max(fresh.next_number, g.next_number)
        if keep_pending and g is not None:
            self._carry_pending(tenant, g, fresh)
        # open tracks follow merges; a track whose visitor was erased decides afresh (one
        # whose visitor was founded in a batch not stored yet keeps it)
        self._follow_merges(tenant, [
            tr for (t, _), cam in self._cameras.items() if t == tenant for tr in cam.open
            if tr.visitor is not None
            and not (keep_pending and visitor_number_or_zero(tr.visitor) > stored_top)])

    def _follow_merges(self, tenant: str, tracks: list[Track]) -> None:
        """Each track's visitor as the store has it now: its merge group's, or none (the
        track decides afresh) where that visitor was erased."""
        now = self.store.live_visitors(tenant, (tr.visitor for tr in tracks))
        for tr in tracks:
            tr.visitor = now[tr.visitor]  # type: ignore[index]

    def _carry_pending(self, tenant: str, old: _Gallery, fresh: _Gallery) -> None:
        """Exemplars of ``old`` the store does not hold (chosen in a batch resolved and
        not stored yet) go on in ``fresh``, under their visitor's canonical id. One whose
        sighting is stored was stored and removed since (consolidation's trim): it stays
        out."""
        stored = {h.face_image_id for held in fresh.exemplars.values() for h in held}
        pending = [(vid, h) for vid, held in old.exemplars.items() for h in held
                   if h.face_image_id not in stored
                   and not is_enrolment_exemplar(h.face_image_id)]  # those: sync_known
        if pending:  # a batch not stored yet has no sightings in the store either
            gone = self.store.existing_sightings(tenant, [h.face_image_id for _, h in pending])
            pending = [(vid, h) for vid, h in pending if h.face_image_id not in gone]
        if not pending:
            return
        canon = {vid: self.store.canonical_id(tenant, vid) for vid in {v for v, _ in pending}}
        added = []
        for vid, h in pending:
            fresh.exemplars.setdefault(canon[vid], []).append(h)
            fresh.changed(canon[vid])
            added.append(Exemplar(tenant, canon[vid], h.face_image_id, h.embedding,
                                  h.quality, _EPOCH))
        self.index.add(added)

    def reset(self, tenant: str) -> None:
        """A batch this resolver decided was not stored (its write failed): rebuild the
        tenant from the store and drop its open tracks, so none of that batch's decisions
        (visitors created, exemplars, held faces) outlives it; its replay decides afresh.
        The faces earlier batches held come back from the store."""
        with self._lock:
            self._reload(tenant)
            self._drop_tracks(tenant)

    def loaded_tenants(self) -> set[str]:
        """Tenants whose gallery is in memory (they took part in this run)."""
        with self._lock:
            return set(self._galleries)

    def tracking_tenants(self) -> set[str]:
        """Tenants with camera tracks in memory (whose held faces a flush decides)."""
        with self._lock:
            return {t for (t, _) in self._cameras}

    def rebuild(self, tenant: str) -> None:
        """Load the tenant's gallery from the store now and forget its open tracks (another
        process changed the tenant; the faces its tracks held are read back with the next
        batch). Unlike :meth:`reload`, nothing of this resolver's own is kept."""
        with self._lock:
            self._galleries.pop(tenant, None)
            self._gallery(tenant)
            self._drop_tracks(tenant)

    def unload(self, tenant: str) -> None:
        """Forget the tenant entirely (gallery, open tracks): it loads again from the store
        at its next batch. Index entries of the tenant are left to that reload."""
        with self._lock:
            self._galleries.pop(tenant, None)
            self._drop_tracks(tenant)

    def drop_tracks(self, tenant: str) -> None:
        """Forget the tenant's open tracks; the faces they held are read back from the store
        with the tenant's next batch (another process may have decided them meanwhile)."""
        with self._lock:
            self._drop_tracks(tenant)

    def _drop_tracks(self, tenant: str) -> None:
        for key in [k for k in self._cameras if k[0] == tenant]:
            del self._cameras[key]
        self._erased_tracks = {t for t in self._erased_tracks if t.tenant != tenant}
        self._durable = {k for k in self._durable if k[0] != tenant}
        self._revived.discard(tenant)

    def forget(self, tenant: str, visitors: Iterable[str] = (),
               face_image_ids: Iterable[str] = ()) -> None:
        """Erasure or retention removed these visitors and exemplars from the store and the
        index (tenancy/privacy): drop them from memory too, so no centroid still carries
        them and an open track of an erased visitor decides afresh. Everything else held
        (open tracks, visitors resolved but not stored yet) stays, which a full
        :meth:`reload` would not guarantee."""
        gone_visitors = set(visitors)
        gone = set(face_image_ids)
        with self._lock:
            g = self._galleries.get(tenant)
            if g is not None:
                for vid in list(g.exemplars):
                    held = g.exemplars[vid]
                    if vid in gone_visitors:
                        gone.update(h.face_image_id for h in held)
                        keep: list[_Held] = []
                    else:
                        keep = [h for h in held if h.face_image_id not in gone]
                    if len(keep) != len(held):
                        g.changed(vid)
                        if keep:
                            g.exemplars[vid] = keep
                        else:
                            del g.exemplars[vid]
            for (t, _), cam in self._cameras.items():
                if t == tenant:
                    for tr in cam.open:
                        if tr.visitor in gone_visitors:
                            tr.visitor = None
                            self._erased_tracks.add(tr)

    def sync_known(self, tenant: str) -> None:
        """Enrolments changed (revisit.known): the staff set and the enrolment photos'
        exemplars, without dropping anything else held (open tracks, visitors resolved
        but not stored yet), which a full :meth:`reload` would."""
        with self._lock:
            g = self._galleries.get(tenant)
            if g is None:
                return  # everything loads on first use
            g.staff = set(self.store.staff(tenant))
            stored = {ex.face_image_id: ex for chunk in self.store.load_exemplars(
                tenant, enrolments_only=True) for ex in chunk}
            held = {h.face_image_id: vid for vid, hs in g.exemplars.items() for h in hs
                    if is_enrolment_exemplar(h.face_image_id)}
            gone = [f for f in held if f not in stored]
            for f in gone:
                vid = held[f]
                g.exemplars[vid] = [h for h in g.exemplars[vid] if h.face_image_id != f]
                g.changed(vid)
            if gone:
                self.index.remove(tenant, gone)
            new = [ex for f, ex in stored.items() if f not in held]
            for ex in new:
                g.exemplars.setdefault(ex.visitor_id, []).append(
                    _Held(ex.quality, ex.face_image_id, np.asarray(ex.embedding, np.float32)))
                g.changed(ex.visitor_id)
            if new:
                self.index.add(new)
            g.next_number = max(g.next_number, self.store.max_visitor_number(tenant) + 1)

    def new_visitor(self, tenant: str) -> str:
        """The next visitor id of the tenant (also for an enrolment made beside the run)."""
        with self._lock:
            g = self._gallery(tenant)
            vid = format_visitor_id(g.next_number)
            g.next_number += 1
            return vid

    def _remember(self, batch: Batch, pending: _Pending, face: Face, unit: np.ndarray,
                  visitor: str) -> None:
        """Keep the face as an exemplar if the visitor has room or it beats the worst one."""
        g = self._gallery(face.tenant)
        held = g.exemplars.setdefault(visitor, [])
        # an enrolment's exemplars neither count nor go: they last as long as it does
        seen = [h for h in held if not is_enrolment_exemplar(h.face_image_id)]
        if len(seen) >= self.max_exemplars:
            worst = min(seen, key=lambda h: (h.quality, h.face_image_id))
            if face.quality <= worst.quality:
                return
            held.remove(worst)
            if not pending.discard(worst.face_image_id):  # added in this batch: never indexed
                self.index.remove(face.tenant, [worst.face_image_id])
            batch.exemplars_dropped.append((face.tenant, worst.face_image_id))
        held.append(_Held(face.quality, face.face_image_id, unit))
        g.changed(visitor)
        ex = Exemplar(face.tenant, visitor, face.face_image_id, unit, face.quality, face.ts)
        pending.add(ex)
        batch.exemplars_added.append(ex)

    # -- the stage -------------------------------------------------------------------
    def resolve(self, batch: Batch) -> Batch:
        """Fill ``batch.sightings`` for the batch's embedded faces (module docstring)."""
        if self.refuse is not None:
            self.refuse(batch)
        with self._lock:
            return self._resolve(batch)

    def _resolve(self, batch: Batch) -> Batch:
        faces = [f for f in batch.faces if f.embedding is not None]
        by_tenant: dict[str, list[Face]] = defaultdict(list)
        for f in faces:
            by_tenant[f.tenant].append(f)
        for tenant in sorted(by_tenant):
            self._resolve_tenant(batch, tenant, by_tenant[tenant])
        return batch

    def flush(self, tenants: Iterable[str] = (), keep_open: bool = False) -> Batch | None:
        """End of a stream: close every open track, deciding the undecided ones (a track
        waiting for more snapshots founds its visitor now). Faces of tracks that still
        have no visitor are reported dropped (``weak_track``). ``tenants``: read these
        tenants' stored held faces back first (a run killed while holding them).
        ``keep_open`` (the end of a run, a graceful stop): the tracks young enough to
        link a next snapshot are decided as well but saved with the batch instead of
        closed, their undecided faces still held, so the next start of the same data
        continues them (:meth:`_revive`)."""
        with self._lock:
            return self._flush(tenants, keep_open)

    def _flush(self, tenants: Iterable[str] = (), keep_open: bool = False) -> Batch | None:
        out = Batch(batch_id="resolver-flush")
        ended: list[Track] = []  # read back, and closed by their own later faces
        for tenant in sorted(set(tenants)):
            if revived := self._revive(out, tenant, set()):
                ended += [t for t in self._link(revived)[1] if t.held]
        by_tenant: dict[str, list[Track]] = defaultdict(list)
        for tr in ended:
            by_tenant[tr.tenant].append(tr)
        for cam in self._cameras.values():
            by_tenant[cam.tenant] += [t for t in cam.open if t.held]
        for tenant in sorted(by_tenant):
            tracks = by_tenant[tenant]
            self._decide(out, tenant, tracks, {id(t) for t in tracks}, defaultdict(set))
        self._drop_weak(out, ended)
        kept = self._still_open() if keep_open else {}
        for key, cam in self._cameras.items():
            self._drop_weak(out, [t for t in cam.open if t not in kept.get(key, ())])
        if keep_open:
            self._save_open(out, kept)
        self._cameras.clear()
        self._erased_tracks.clear()
        return out if out.dropped or out.sightings or out.released or out.tracks_cleared \
            or out.tracks_saved else None

    def _still_open(self) -> dict[tuple[str, str], list[Track]]:
        """Per camera, the open tracks a later snapshot of it could still join: within
        ``track_gap_s`` of the camera's newest snapshot, on a camera not quiet for twice
        that while its tenant's others went on (:meth:`_link` closes those)."""
        gap = self.track_params.gap
        newest: dict[str, datetime] = {}
        for (tenant, _), cam in self._cameras.items():
            if cam.latest is not None:
                newest[tenant] = max(newest.get(tenant, cam.latest), cam.latest)
        out = {}
        for key, cam in self._cameras.items():
            if cam.latest is None or cam.latest < newest[key[0]] - 2 * gap:
                continue
            out[key] = [t for t in cam.open if t.last_ts >= cam.latest - gap
                        and t not in self._erased_tracks]
        return out

    def _save_open(self, batch: Batch, kept: dict[tuple[str, str], list[Track]]) -> None:
        """Save the kept tracks with the flush's batch, replacing what the store has of
        their tenants; the faces they hold stay held. This resolver reads them back like
        one that starts (its memory of them ends with the flush)."""
        tenants = sorted({t for t, _ in self._cameras} | {t for t, _ in kept})
        for key in sorted(kept):
            self._keep_held(batch, kept[key])
            batch.tracks_saved += self._cameras[key].save(kept[key])
        batch.tracks_cleared += [t for t in tenants if t not in batch.tracks_cleared]
        self._durable = {k for k in self._durable if k[0] not in tenants}
        self._revived -= set(tenants)

    def _drop_faces(self, batch: Batch, faces: Iterable[Face], detail: str,
                    reason: str = WEAK_TRACK) -> None:
        for f in faces:
            batch.dropped.append(Dropped(f.tenant, f.image_id, f.bbox, reason, detail))
            self._release(batch, f)

    def _release(self, batch: Batch, f: Face) -> None:
        """A held face decided or dropped: the store forgets it with this batch."""
        key = (f.tenant, f.face_image_id)
        if key in self._durable:
            self._durable.discard(key)
            batch.released.append(key)

    def _revive(self, batch: Batch, tenant: str, fresh: set[str]) -> list[Face]:
        """The tenant's held faces as the store has them, once after a start or a reset:
        those not in this batch already (``fresh``: redelivered), and not stored as
        sightings since (a stale row, released)."""
        if tenant in self._revived:
            return []
        self._revived.add(tenant)
        owners = self._restore(batch, tenant)
        faces = self.store.held_faces(tenant)
        if not faces:
            return []
        stored = self._already_stored(tenant, faces)
        out = []
        for f in faces:
            self._durable.add((tenant, f.face_image_id))
            if f.face_image_id in stored:
                self._release(batch, f)
            elif f.face_image_id in fresh:
                continue
            elif (owner := owners.get(f.face_image_id)) is not None:
                owner.held.append(f)  # its saved track continues with it
            else:
                out.append(f)
        if out:
            log.info("tenant %s: %d held face(s) read back from the store", tenant, len(out))
        return out

    def _restore(self, batch: Batch, tenant: str) -> dict[str, Track]:
        """Open the tracks the last run or server saved for the tenant (their stored rows go
        with this batch); a visitor merged since is its group's, one erased since leaves
        its track undecided. Returns the track of each face they held."""
        saved = self.store.open_tracks(tenant)
        if not saved:
            return {}
        batch.tracks_cleared.append(tenant)
        by_camera: dict[str, list] = defaultdict(list)
        for row in saved:
            by_camera[row.camera_id].append(row)
        owners: dict[str, Track] = {}
        restored: list[Track] = []
        for camera, rows in by_camera.items():
            cam = self._camera(tenant, camera)
            if cam.open:
                continue  # this resolver already follows the camera
            for tr, row in zip(cam.restore(rows), rows, strict=True):
                restored.append(tr)
                owners.update(dict.fromkeys(row.held, tr))
        self._follow_merges(tenant, [tr for tr in restored if tr.visitor is not None])
        log.info("tenant %s: %d open track(s) read back from the store", tenant, len(saved))
        return owners

    def _keep_held(self, batch: Batch, tracks: Iterable[Track]) -> None:
        """Faces these tracks still hold that the store does not have yet."""
        for tr in tracks:
            for f in tr.held:
                key = (f.tenant, f.face_image_id)
                if key not in self._durable:
                    self._durable.add(key)
                    batch.held.append(f)

    def _twin(self, tr: Track, barred: set[str]) -> str | None:
        """The visitor of another track of this camera, seen in the same frames, of whom
        this track looks like a washed-out, blurred copy: a reflection (or a picture) of
        them. Two people of one frame are rarely this alike, and glass both dims and blurs
        what it reflects (one of the two alone also describes a person in worse light)."""
        best, best_sim = None, self.twin_threshold
        for other, sim in self._alike(tr, barred):
            if sim >= best_sim and tr.contrast < TWIN_CONTRAST * other.contrast \
                    and tr.sharpness < TWIN_SHARPNESS * other.sharpness:
                best, best_sim = other.visitor, sim
        if best is not None:
            log.debug("track is a twin of %s (%.3f)", best, best_sim)
        return best

    def _may_be_twin(self, tr: Track, barred: set[str]) -> bool:
        """Whether this track, already dimmer or blurrier than a look-alike barred visitor's
        track that is still open, may yet prove its twin: the other's pooled face, contrast
        and sharpness change with each face it gains (a person walking towards the camera
        shows their best face last), so founding now would make the answer depend on how
        the snapshots were batched."""
        cam = self._cameras.get((tr.tenant, tr.camera))
        still_open = set(cam.open) if cam is not None else set()
        return any(other in still_open and sim >= self.twin_wait
                   and (tr.contrast < TWIN_CONTRAST * other.contrast
                        or tr.sharpness < TWIN_SHARPNESS * other.sharpness)
                   for other, sim in self._alike(tr, barred))

    def _alike(self, tr: Track, barred: set[str]) -> list[tuple[Track, float]]:
        """Tracks of this camera holding a barred visitor (open, or seen in this track's
        frames though closed since), with their likeness to this track."""
        pooled = tr.pooled
        cam = self._cameras.get((tr.tenant, tr.camera))
        if pooled is None or cam is None or not barred:
            return []
        still_open = set(cam.open)
        others = cam.open + sorted((c for c in tr.companions if c not in still_open),
                                   key=lambda c: c.key)
        return [(other, float(op @ pooled)) for other in others
                if other is not tr and other.visitor in barred
                and (op := other.pooled) is not None]

    def _withdraw(self, batch: Batch, g: _Gallery, tenant: str, tr: Track) -> None:
        """A track that founded a visitor turned out to be a static picture: the visitor was
        never a person. Unless it was merged with anyone since, the store erases it after
        this batch is written, and it is forgotten here."""
        vid = tr.visitor
        tr.visitor = None
        if vid is None:
            return
        detail = self.store.visitor_detail(tenant, vid)
        if detail is not None and (detail.visitor_id != vid or detail.aliases):
            return  # merged with someone: keep it (a person may be in that group)
        held = g.exemplars.pop(vid, [])
        g.changed(vid)
        self.index.remove(tenant, [h.face_image_id for h in held])
        batch.visitors_withdrawn.append((tenant, vid))

    def _drop_weak(self, batch: Batch, tracks: Iterable[Track]) -> None:
        """Closed tracks: faces of those that never got a visitor are dropped."""
        for tr in tracks:
            if tr.visitor is None and tr.twin_of is None:
                self._drop_faces(batch, tr.held, f"track of {tr.faces} face(s) matched nobody "
                                 "and none could found a visitor")
            tr.held = []

    def _camera(self, tenant: str, camera: str) -> CameraTracks:
        cam = self._cameras.get((tenant, camera))
        if cam is None:
            cam = self._cameras[(tenant, camera)] = CameraTracks(tenant, camera, self.track_params)
        return cam

    def _link(self, faces: list[Face]) -> tuple[list[Track], list[Track]]:
        """Faces of one tenant into their cameras' tracks, frame by frame in time order;
        returns the tracks this batch touched and the tracks that closed (to be settled once
        this batch's decisions are made)."""
        by_frame: dict[tuple[str, str], list[Face]] = defaultdict(list)
        for f in faces:
            by_frame[(f.camera_id, f.image_id)].append(f)
        order = sorted(by_frame, key=lambda k: (by_frame[k][0].ts, k))
        touched: dict[int, Track] = {}
        closed: list[Track] = []
        for cam_id, image_id in order:
            frame_faces = by_frame[(cam_id, image_id)]
            cam = self._camera(frame_faces[0].tenant, cam_id)
            closed += cam.close_before(frame_faces[0].ts)
            for tr in cam.link(frame_faces):
                touched.setdefault(id(tr), tr)
        # this tenant's cameras gone quiet: close their tracks too, once well past the gap
        # (another tenant's are decided with its own gallery, in its own batches or at the end)
        if faces:
            latest = max(f.ts for f in faces)
            tenant = faces[0].tenant
            for key, cam in list(self._cameras.items()):
                if key[0] == tenant and cam.latest is not None and \
                        cam.latest < latest - 2 * self.track_params.gap:
                    closed += cam.close_before(latest)
                    if not cam.open:
                        del self._cameras[key]
        for tr in closed:
            touched.setdefault(id(tr), tr)
        return list(touched.values()), closed

    def _already_stored(self, tenant: str, faces: Iterable[Face]) -> dict[str, str]:
        return self.store.existing_sightings(tenant, [f.face_image_id for f in faces])

    def _resolve_tenant(self, batch: Batch, tenant: str, faces: list[Face]) -> None:
        known = self._already_stored(tenant, faces)
        taken: dict[str, set[str]] = defaultdict(set)  # frame -> visitors redelivered there
        canonical = {v: self.store.canonical_id(tenant, v) for v in set(known.values())}
        for f in faces:
            if f.face_image_id in known:
                vid = known[f.face_image_id]
                taken[f.frame_key].update((vid, canonical[vid]))
                self._emit(batch, f, vid, 1.0, new=False)
        fresh = [f for f in faces if f.face_image_id not in known]
        if not fresh:
            return
        revived = self._revive(batch, tenant, {f.face_image_id for f in fresh})
        tracks, closed = self._link(revived + fresh)
        self._decide(batch, tenant, tracks, {id(t) for t in closed}, taken)
        self._drop_weak(batch, closed)
        self._keep_held(batch, tracks)

    def _decide(self, batch: Batch, tenant: str, tracks: list[Track], closed: set[int],
                taken: dict[str, set[str]]) -> None:
        """Give the tracks' held faces their visitors (module docstring, rules 3-7)."""
        g = self._gallery(tenant)
        self._expire(batch, tracks)
        # in order of appearance, so visitor numbers follow first sighting (older = lower)
        tracks = sorted(tracks, key=lambda t: (min(f.ts for f in t.held) if t.held else t.first_ts,
                                               t.visitor is None, not t.creatable, t.camera, t.key))
        undecided = [t for t in tracks if t.visitor is None and t.held and t.pooled is not None]
        # one index search for the undecided tracks; exemplars this call adds are searched
        # in ``pending`` and reach the index at the end
        hits = dict(zip(
            (id(t) for t in undecided),
            self.index.search(tenant, np.stack([t.pooled for t in undecided]), self.k,
                              enough=self.threshold + RECENT_MARGIN) if undecided else [],
            strict=True,
        ))
        dim = next((len(f.embedding) for t in tracks for f in t.held if f.embedding is not None), 0)
        pending = _Pending(dim or 1)
        for tr in tracks:
            if tr.visitor is None or not tr.held:
                continue
            clash = [f for f in tr.held if tr.visitor in taken[f.frame_key]]  # redelivered
            if clash:
                self._drop_faces(batch, clash, "its frame already holds this track's visitor")
                tr.held = [f for f in tr.held if f not in clash]
        for tr in tracks:
            if tr.twin_of is not None and tr.held:
                self._drop_faces(batch, tr.held, f"alike {tr.twin_of}, seen in the same frame",
                                 reason=TWIN)
                tr.held = []
            if tr.static and tr.held:
                self._drop_faces(batch, tr.held, "unchanged since "
                                 f"{tr.still_since:%Y-%m-%d %H:%M:%S}", reason=STATIC)
                tr.held = []
                if tr.founded and tr.visitor is not None:
                    self._withdraw(batch, g, tenant, tr)
            if not tr.held:
                continue
            new = False
            if tr.visitor is not None:
                vid = tr.visitor
            else:
                barred = {c.visitor for c in tr.companions if c.visitor is not None}
                barred |= set().union(*(taken[f.frame_key] for f in tr.held))
                pooled = tr.pooled
                vid = None
                if pooled is not None:
                    proposals = [h.visitor_id for h in hits.get(id(tr), [])]
                    proposals += pending.visitors_near(pooled, self.k)
                    vid, _ = self._best_centroid(g, pooled, proposals, barred)
                if vid is None:
                    if not (tr.creatable or tr.fair >= self.track_create_faces):
                        continue  # held until it matches, can found a visitor, or closes
                    if tr.faces < self.create_after and id(tr) not in closed:
                        continue  # young: more snapshots may still match a known visitor
                    if tr.still and id(tr) not in closed:
                        continue  # unchanged so far: a person counts once they move or leave
                    if tr.faces == 1 and tr.best_quality < self.single_face_quality:
                        continue  # one mediocre snapshot: too little to count a person
                    tr.twin_of = self._twin(tr, barred)
                    if tr.twin_of is not None:
                        self._drop_faces(batch, tr.held, f"alike {tr.twin_of}, seen in the "
                                         "same frame", reason=TWIN)
                        tr.held = []
                        continue
                    if id(tr) not in closed and self._may_be_twin(tr, barred):
                        continue  # held until the look-alike's track or its own closes
                    vid, new = self.new_visitor(tenant), True
                    tr.founded = True
                    batch.visitors_created.append((tenant, vid, min(f.ts for f in tr.held)))
                tr.visitor = vid
            centroid = g.centroid(vid)
            first = min(tr.held, key=lambda f: (f.ts, f.face_image_id))
            for f in tr.held:
                score = 1.0 if new or centroid is None or f.embedding is None \
                    else float(np.asarray(f.embedding, dtype=np.float32) @ centroid)
                self._emit(batch, f, vid, score, new=new and f is first)
            best = sorted((f for f in tr.held if f.creatable and f.embedding is not None),
                          key=lambda f: (-f.quality, f.face_image_id))
            for f in best[: max(0, self.per_track - tr.exemplars)]:
                self._remember(batch, pending, f, _unit(f.embedding), vid)  # type: ignore[arg-type]
                tr.exemplars += 1
            tr.held = []
        self.index.add(pending.exemplars())

    def _expire(self, batch: Batch, tracks: list[Track]) -> None:
        """Held faces (read back, or of a restored track) passed ``refuse`` when they came,
        but their tenant's retention may have been shortened since: those now past it are
        dropped, not stored, as the door would refuse them today."""
        held = [f for t in tracks for f in t.held]
        if self.refuse is None or not held:
            return
        probe = Batch(batch_id="retention", faces=held)
        self.refuse(probe)
        keep = {id(f) for f in probe.faces}
        for tr in tracks:
            old = [f for f in tr.held if id(f) not in keep]
            if old:
                self._drop_faces(batch, old, "past its tenant's retention when decided",
                                 reason=EXPIRED)
                tr.held = [f for f in tr.held if id(f) in keep]

    def _best_centroid(
        self, g: _Gallery, query: np.ndarray, proposals: list[str], barred: set[str]
    ) -> tuple[str | None, float]:
        """Best centroid among the proposed visitors, if at or above threshold."""
        cands: list[str] = []
        cents: list[np.ndarray] = []
        for vid in dict.fromkeys(proposals):
            if vid not in barred and (c := g.centroid(vid)) is not None:
                cands.append(vid)
                cents.append(c)
        if not cands:
            return None, self.threshold
        scores = np.stack(cents) @ query
        # enrolled staff need a closer match: a customer taken for staff leaves the reports
        need = np.array([self.staff_threshold if v in g.staff else self.threshold
                         for v in cands], np.float32)
        scores = np.where(scores >= need, scores, -np.inf)
        best = int(np.argmax(scores))
        if not np.isfinite(scores[best]):
            return None, self.threshold
        return cands[best], float(scores[best])

    def _emit(self, batch: Batch, f: Face, vid: str, score: float, *, new: bool) -> None:
        self._release(batch, f)
        batch.sightings.append(
            Sighting(
                tenant=f.tenant, face_id=vid, face_image_id=f.face_image_id,
                image_id=f.image_id, camera_id=f.camera_id, location_id=f.location_id,
                ts=f.ts, bbox=f.bbox, quality=f.quality, match_score=score,
                new_visitor=new, embedding=f.embedding, zone=f.zone,
            )
        )
