"""Prometheus metrics on a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self.latency = Histogram(
            "reid_http_request_duration_seconds",
            "HTTP request latency per endpoint",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "reid_http_requests",
            "HTTP requests per endpoint and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.batch = Histogram(
            "reid_embed_batch_size",
            "images per model run (micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.search = Histogram(
            "reid_search_duration_seconds",
            "gallery search time (index + filters)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_size = Gauge("reid_index_size", "vectors in the search index", registry=self.registry)
        self.items = Gauge("reid_gallery_items", "items in the gallery database", registry=self.registry)
        self.queue_depth = Gauge("reid_job_queue_depth", "footage jobs waiting for a worker",
                                 registry=self.registry)
        self.jobs = Gauge("reid_jobs", "footage jobs by state", ["state"], registry=self.registry)
        self.pending_results = Gauge("reid_worker_results_pending",
                                     "worker writes (Redis queue) not yet applied by the API",
                                     registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.requests.labels(method, route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
