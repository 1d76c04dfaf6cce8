"""The one object a server process owns: runtime, admin data, batch processor, metrics.

Admin data (tenants, keys, audit log, the dashboard session key) lives in the configured
store, so replicas of ``revisit serve`` on one PostgreSQL store share it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from revisit.api.door import DoorCounts, door_dir, snapshot, write_snapshot
from revisit.api.housekeeping import purge_held_batches
from revisit.api.metrics import Metrics
from revisit.api.processing import BatchProcessor
from revisit.api.settings import ServiceSettings
from revisit.api.spool import Spool
from revisit.api.workpool import ReportPool
from revisit.config import Settings
from revisit.pipeline import Runtime
from revisit.tenancy.db import open_tenancy
from revisit.tenancy.privacy import (
    erase_visitor,
    purge_tenant,
    purgeable_tenants,
)

if TYPE_CHECKING:
    from revisit.identity.resolver import Resolver
    from revisit.store.base import MergeRecord

log = logging.getLogger(__name__)

DOOR_REFRESH_S = 5.0  # the accept process's snapshot, read again for other replicas' changes
# audited actions that change what the accept process checks: keys, cameras, retention
DOOR_ACTIONS = frozenset({"tenant", "key", "camera", "location"})


class Service:
    def __init__(
        self, settings: Settings, service: ServiceSettings | None = None,
        runtime: Runtime | None = None, behind_door: bool = False,
    ) -> None:
        """``behind_door``: the accept process (:mod:`revisit.api.door`) takes camera
        uploads and spools them; this process takes them from there and tells it what it
        needs to check them (keys, cameras, retention). Embedded mode only."""
        self.settings = settings
        self.config = service or ServiceSettings()
        self.runtime = runtime or Runtime(settings)
        self.write_lock = threading.RLock()
        self.tenancy = open_tenancy(self.runtime.store, settings.data)
        store = self.runtime.store
        self.metrics = Metrics(
            lambda: float(self.processor.depth()),
            tenant_labels=self.config.metrics_tenant_labels,
            skipped=lambda: float(store.count_skipped_batches(pending_only=True)),
        )
        self.behind_door = behind_door and not settings.queue_url
        self.processor = BatchProcessor(
            self.runtime, self.metrics, self.write_lock, self.config.queue_batches,
            spool=Spool(settings.data / "spool", clean=True), adopt_spool=self.behind_door,
        )
        self._door_counts: DoorCounts | None = None
        self._door_lock = threading.Lock()
        self._door_written: dict[str, Any] | None = None
        if self.behind_door:
            self._door_counts = DoorCounts(door_dir(settings), self.metrics)
            self.tenancy.on_change = self._audited
        self.reports = ReportPool(self.config.report_workers, self.config.report_waiting,
                                  self.config.report_budget_s)
        self.session_secret = (self.config.session_secret
                               or self.tenancy.shared_secret("dashboard_session"))
        self._pipeline = None
        if settings.queue_url:
            from revisit.distributed.status import PipelineStatus

            self._pipeline = PipelineStatus(settings, self.runtime.store)
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None
        self._enrol_vision: Any = None
        self._enrol_lock = threading.Lock()
        self.ready = False

    def enrol_process(self, batch: Any) -> Any:
        """Detect and embed enrolment photos with models apart from the pipeline's (OpenCV
        nets are not thread-safe), loaded on the first enrolment; one at a time."""
        from revisit.pipeline import pipeline_model_settings
        from revisit.vision.stages import Vision

        with self._enrol_lock:
            if self._enrol_vision is None:
                self._enrol_vision = Vision(pipeline_model_settings(self.settings))
            return self._enrol_vision.process(batch)

    def update_door(self) -> None:
        """What the accept process checks uploads against, written again when it changed:
        after every audited change here (keys, cameras, retention: all are audited, and
        the audit calls this), and every ``DOOR_REFRESH_S`` for changes made through
        another replica on a shared store."""
        if not self.behind_door:
            return
        with self._door_lock:
            data = snapshot(self.tenancy, self.settings.privacy.retention_at_door)
            if data != self._door_written:
                write_snapshot(door_dir(self.settings), data)
                self._door_written = data

    def _audited(self, action: str) -> None:
        """An audit entry was written: the door's snapshot follows a change of what it
        checks (not reads, alerts, erasures). A failure is logged, not raised into a
        change already made; the periodic refresh writes it then."""
        if action.split(".", 1)[0] not in DOOR_ACTIONS:
            return
        try:
            self.update_door()
        except Exception:
            log.exception("cannot update the accept process's snapshot after %s", action)

    def _door_loop(self) -> None:
        while not self._stop.wait(DOOR_REFRESH_S):
            try:
                self.update_door()
            except Exception:  # the store is away: the door keeps the last snapshot
                log.warning("cannot refresh the accept process's snapshot", exc_info=True)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, processing: bool = True) -> None:
        self.update_door()
        if self.behind_door:
            threading.Thread(target=self._door_loop, name="door-snapshot", daemon=True).start()
        if processing:
            if self.config.model_process and not self.settings.queue_url:
                from revisit.api.modelproc import ModelProcess

                self.runtime.use_models(ModelProcess(self.settings, self.runtime.zones,
                                                     nice=self.config.model_process_nice))
            self.processor.start()
        if self.config.purge_interval_s > 0:
            self._purger = threading.Thread(target=self._purge_loop, name="retention",
                                            daemon=True)
            self._purger.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self._stop.set()
        self.processor.stop()
        if not self.settings.queue_url:  # faces of tracks still open: stored, not lost
            with self.write_lock:
                try:
                    self.runtime.flush()
                except Exception:
                    log.exception("cannot store the faces the resolver held at stop")
        self.reports.close()
        if self._pipeline is not None:
            self._pipeline.close()
        if self._purger is not None:
            self._purger.join(timeout=5)
        self.runtime.close()

    def _purge_loop(self) -> None:
        while not self._stop.wait(self.config.purge_interval_s):
            try:
                self.purge_all("scheduler")
            except Exception:
                log.exception("scheduled retention purge failed")

    # -- operations -----------------------------------------------------------------------
    def pipeline_status(self) -> dict[str, Any]:
        """Distributed: every stage's queue and the store (revisit.distributed.status);
        embedded: this process's queue."""
        if self._pipeline is None:
            return {"mode": "embedded", "queue_depth": self.processor.depth(),
                    "busy": self.processor.busy()}
        return {"mode": "broker", **self._pipeline.read()}

    def update_pipeline_gauges(self) -> None:
        if self._door_counts is not None:
            self._door_counts.absorb()
        if self._pipeline is None:
            return
        try:
            stages = self._pipeline.stages()
        except Exception:  # a broker away must not fail the scrape
            log.warning("cannot read the stage queues for metrics", exc_info=True)
            return
        for stage, st in stages.items():
            for what, value in st.items():
                if what in ("waiting", "in_flight", "dead_letters"):
                    self.metrics.stage_batches.labels(stage, what).set(value)

    # -- privacy --------------------------------------------------------------------------
    def local_resolver(self, start: bool = False) -> Resolver | None:
        """The resolver this process runs (embedded mode): the one already in use (it
        must forget what erasure and retention delete), or with ``start`` one made now
        (an enrolment takes its visitor id from it). With a broker the workers resolve,
        and the identity version a change bumps makes them reload."""
        if self.settings.queue_url:
            return None
        return self.runtime.resolver if start else self.runtime.loaded_resolver

    def erase(self, tenant: str, visitor_id: str, actor: str) -> dict[str, int]:
        with self.write_lock:
            return erase_visitor(self.runtime.store, self.runtime.index, self.tenancy, tenant,
                                 visitor_id, actor, self.settings.crops_dir,
                                 self.local_resolver())

    def merge(self, tenant: str, keep: str, absorb: str, reason: str, actor: str) -> MergeRecord:
        """One person seen as two: ``absorb`` reads as ``keep`` from now on (reversible);
        the running resolver reloads the tenant, so new sightings follow the merge."""
        with self.write_lock:
            rec = self.runtime.store.merge_visitors(tenant, keep, absorb, reason=reason)
            self.tenancy.audit(tenant, actor, "visitor.merge", {
                "keep": rec.keep, "absorb": rec.absorb, "merge_id": rec.merge_id,
                "reason": reason})
            self._reload(tenant)
        return rec

    def split(self, tenant: str, visitor_id: str, actor: str) -> MergeRecord:
        """Undo the merge that absorbed ``visitor_id``."""
        with self.write_lock:
            rec = self.runtime.store.split_visitor(tenant, visitor_id)
            self.tenancy.audit(tenant, actor, "visitor.split", {
                "keep": rec.keep, "absorb": rec.absorb, "merge_id": rec.merge_id})
            self._reload(tenant)
        return rec

    def _reload(self, tenant: str) -> None:
        """The running resolver follows a change already stored (and audited): if it
        cannot rebuild the tenant now, it forgets it and rebuilds at its next batch."""
        resolver = self.local_resolver()
        if resolver is None:
            return
        try:
            resolver.reload(tenant)
        except Exception:
            log.exception("cannot reload tenant %s in the resolver: it will at its next batch",
                          tenant)
            resolver.unload(tenant)

    def purge(self, tenant: str, actor: str) -> dict[str, Any]:
        with self.write_lock:
            return purge_tenant(self.runtime.store, self.runtime.index, self.tenancy, tenant,
                                actor, self.settings.crops_dir, resolver=self.local_resolver())

    def purge_all(self, actor: str) -> dict[str, Any]:
        """Every tenant's retention, then the service's own: finished batch statuses and
        failed spooled batches older than ``batch_status_days``, or whose snapshots are
        all older than their tenant's retention."""
        out = {t: self.purge(t, actor)
               for t in purgeable_tenants(self.runtime.store, self.tenancy)}
        problem = purge_held_batches(self.runtime.store, self.tenancy, self.processor.spool,
                                     self._pipeline, self.config.batch_status_days)
        if problem:  # a broker away must not stop the store's retention
            log.warning("retention purge: %s", problem)
        return out
