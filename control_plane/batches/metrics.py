"""The batch worker's Prometheus metrics, on its own port (``INFERY_BATCH_METRICS_PORT``, 0 = off).

Labels stay bounded: results and statuses, never a workspace, batch or custom_id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class BatchMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lines = Counter(
            "infery_batch_lines",
            "Batch lines sent through the listener, by result: completed (2xx), failed (another status"
            " that stands), retried (a 429, 5xx, lost connection or a line still running: sent again later),"
            " lost (another worker took the line over before its answer came).",
            ("result",),
            registry=r,
        )
        self.batches = Counter(
            "infery_batches",
            "Batches this worker brought to an end, by final status.",
            ("status",),
            registry=r,
        )
        self.recovered = Counter(
            "infery_batch_lines_recovered",
            "Lines a worker had claimed whose answer was never written (it died, or the listener did"
            " not answer), asked about with a recovery probe, by result: answered (the stored answer,"
            " replayed at no charge, recorded), not_sent (never served: cancelled, expired or failed"
            " as such), unknown (the listener refused to say, e.g. the batch's key was revoked).",
            ("result",),
            registry=r,
        )
        self.lines_swept = Counter(
            "infery_batch_lines_swept",
            "Lines of ended batches deleted by the retention sweep (INFERY_BATCH_LINES_RETENTION_DAYS).",
            registry=r,
        )
        self.in_flight = Gauge(
            "infery_batch_lines_in_flight", "Lines this worker is sending now.", registry=r
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, host, registry=self.registry)
