"""Prometheus metrics of one worker process (``revisit worker --metrics-port``): what the
service's ``/metrics`` cannot see from outside, i.e. how fast and how well this process
works. Stage-level only: no tenant label, nothing about who was seen."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    def __init__(self, stage: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["stage"]
        self.batches = Counter("revisit_worker_batches", "Batches this worker handled and "
                               "acknowledged", labels, registry=r).labels(stage)
        self.frames = Counter("revisit_worker_frames", "Snapshots in those batches", labels,
                              registry=r).labels(stage)
        self.errors = Counter("revisit_worker_errors", "Failures (a bad batch, the broker or "
                              "the store away): the batch is delivered again", labels,
                              registry=r).labels(stage)
        self.seconds = Histogram(
            "revisit_worker_batch_seconds", "Wall time to handle one batch (lock waits "
            "included)", labels, registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        ).labels(stage)
        self.cpu = Counter("revisit_worker_cpu_seconds", "CPU time of the threads handling "
                           "batches (inference runs on them)", labels, registry=r).labels(stage)
        self.last = Gauge("revisit_worker_last_batch_timestamp_seconds", "When this worker "
                          "last acknowledged a batch (Unix time; 0: not yet)", labels,
                          registry=r).labels(stage)
        self.threads = Gauge("revisit_worker_threads", "Consumer threads of this process",
                             labels, registry=r).labels(stage)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Answer scrapes on ``host:port`` from a daemon thread."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
