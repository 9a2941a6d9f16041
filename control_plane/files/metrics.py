"""The files service's Prometheus metrics: uploads, bytes, deletions.

Served on their own plain-HTTP port (``INFERY_FILES_METRICS_PORT``, 0 = off): the API
port accepts Envoy's client certificate only, which a Prometheus scraper does not
have. Nothing secret in them: counts, results and reasons, no workspace or file id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server


class FilesMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.uploads = Counter(
            "infery_files_uploads",
            "Uploads to /v1/files by result: stored, refused (a bad form, 400), too_large (413), failed.",
            ("result",),
            registry=r,
        )
        self.uploaded_bytes = Counter("infery_files_uploaded_bytes", "Bytes of the files stored.", registry=r)
        self.deleted = Counter(
            "infery_files_deleted",
            "Files whose bytes were deleted, by reason: deleted (the API), expired, abandoned (an upload"
            " that never completed).",
            ("reason",),
            registry=r,
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, host, registry=self.registry)
