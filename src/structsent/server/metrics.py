"""Prometheus metrics of the server, in a registry of their own (one per app)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import require
from .batcher import BatchReport

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """Request latency, batch shape, queue depth, texts, errors and refused connections.

    A request whose client left before its answer is counted with status 499 (nginx's "client
    closed request"), apart from the errors the server answered.

    >>> metrics = ServerMetrics(queue_depth=lambda: 0)
    >>> b"structsent_queue_depth" in metrics.render()
    True
    """

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, *, queue_depth: Callable[[], float]) -> None:
        prometheus = require("prometheus_client", "server")
        self._prometheus = prometheus
        # The *_created timestamp series double the output and say nothing a scraper needs.
        # (A process-wide switch of prometheus_client; the server owns its process.)
        prometheus.disable_created_metrics()
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = prometheus.Histogram(
            "structsent_request_duration_seconds", "Time from request to response, by endpoint and status",
            ("endpoint", "status"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = prometheus.Histogram(
            "structsent_batch_size", "Texts per merged batch", buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.batch_requests = prometheus.Histogram(
            "structsent_batch_requests", "Requests with texts in one merged batch (a request cut into parts: each)",
            buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.batch_tokens = prometheus.Histogram(
            "structsent_batch_tokens", "Padded tokens computed per merged batch",
            buckets=BATCH_TOKEN_BUCKETS, registry=r,
        )
        self.batch_seconds = prometheus.Histogram(
            "structsent_batch_duration_seconds", "Model time per merged batch", buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = prometheus.Gauge(
            "structsent_queue_depth", "Texts admitted and waiting for a model batch", registry=r,
        )
        self.queue_depth.set_function(queue_depth)
        self.texts = prometheus.Counter("structsent_texts", "Texts labelled (flagged ones included)", registry=r)
        self.text_errors = prometheus.Counter(
            "structsent_text_errors", "Texts answered with an error instead of a label", registry=r,
        )
        self.errors = prometheus.Counter(
            "structsent_errors", "Requests answered with an error, by error type", ("error_type",), registry=r,
        )
        self.model_batches = prometheus.Counter(
            "structsent_model_batches", "Model calls (a merged batch is cut into length-sorted ones)", registry=r,
        )
        self.failed_batches = prometheus.Counter(
            "structsent_failed_batches", "Model batches that raised", registry=r,
        )
        self.abandoned_batches = prometheus.Counter(
            "structsent_abandoned_batches",
            "Merged batches stopped at a model call because every client of them had left", registry=r,
        )
        self.refused_connections = prometheus.Counter(
            "structsent_refused_connections",
            "Connections closed before a request reached the app, by reason: answered (max_connections, "
            "read_timeout_s, max_header_bytes, invalid_request), dropped (unread_response: a client that "
            "took none of its answers), or closed without a word (idle: no request within read_timeout_s)",
            ("reason",), registry=r,
        )

    def observe_batch(self, report: BatchReport) -> None:
        if report.failed:
            self.failed_batches.inc()
            return
        if report.abandoned:
            self.abandoned_batches.inc()
            return
        self.batch_size.observe(report.texts)
        self.batch_requests.observe(report.requests)
        self.batch_tokens.observe(report.padded_tokens)
        self.batch_seconds.observe(report.seconds)
        self.model_batches.inc(report.model_batches)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(endpoint, str(status)).observe(seconds)

    def observe_texts(self, total: int, flagged: int) -> None:
        self.texts.inc(total)
        if flagged:
            self.text_errors.inc(flagged)

    def observe_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def observe_refused_connection(self, reason: str) -> None:
        self.refused_connections.labels(reason).inc()

    def render(self) -> bytes:
        return self._prometheus.generate_latest(self.registry)
