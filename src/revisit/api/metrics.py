"""Prometheus metrics of one service instance (own registry, so tests can run several).

Per-tenant series are labelled ``tenant="all"`` unless ``tenant_labels`` is on: a metrics
scraper should not learn which tenants a server holds, nor their volumes, by default.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


def _or_nan(fn: Callable[[], float]) -> Callable[[], float]:
    """A gauge that reads the store or the broker must not turn a scrape into an error
    (the scrape during an outage is the one an operator needs)."""

    def read() -> float:
        try:
            return fn()
        except Exception:
            return float("nan")

    return read


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], tenant_labels: bool = False,
                 skipped: Callable[[], float] | None = None) -> None:
        self.tenant_labels = tenant_labels
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_received = Counter(
            "revisit_frames_received", "Snapshots accepted by POST /v1/batches", ["tenant"],
            registry=r)
        self.frames_duplicate = Counter(
            "revisit_frames_duplicate", "Snapshots skipped as already received (image_id)",
            ["tenant"], registry=r)
        self.frames_processed = Counter(
            "revisit_frames_processed", "Snapshots through every stage", ["tenant"], registry=r)
        self.frames_rejected = Counter(
            "revisit_frames_rejected", "Snapshots refused (at upload or in processing)",
            ["tenant", "reason"], registry=r)
        self.faces = Counter("revisit_faces", "Faces detected", ["tenant"], registry=r)
        self.sightings = Counter("revisit_sightings", "Sightings stored", ["tenant"], registry=r)
        self.new_visitors = Counter(
            "revisit_new_visitors", "Visitors created", ["tenant"], registry=r)
        self.batches = Counter(
            "revisit_batches", "Camera batches by final state", ["state"], registry=r)
        self.throttled = Counter(
            "revisit_batches_throttled", "Batches refused with 429 (queue full)", registry=r)
        self.stage_seconds = Histogram(
            "revisit_stage_seconds", "Time one batch spends in a stage", ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r)
        self.queue_depth = Gauge(
            "revisit_queue_depth", "Accepted batches waiting for processing", registry=r)
        self.queue_depth.set_function(_or_nan(queue_depth))  # a broker away: NaN, not a 500
        self.stage_batches = Gauge(
            "revisit_stage_batches", "Distributed mode: batches per stage queue, by state "
            "(waiting, in_flight, dead_letters), read at each scrape", ["stage", "state"],
            registry=r)
        if skipped is not None:
            self.skipped = Gauge(
                "revisit_resolve_skipped_batches", "Stream batches resolve stopped waiting "
                "for (dead-lettered upstream) and that have not turned up since", registry=r)
            self.skipped.set_function(_or_nan(skipped))

    def tenant(self, tenant: str) -> str:
        """The ``tenant`` label value of a tenant's series."""
        return tenant if self.tenant_labels else "all"

    def render(self) -> bytes:
        return generate_latest(self.registry)
