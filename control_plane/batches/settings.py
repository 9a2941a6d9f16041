"""The batch worker's settings: every INFERY_* variable it reads, validated once at start.

``python -m control_plane.batches --help`` lists them, from this model (infery_proto.settings).
"""

from __future__ import annotations

from typing import Literal

from infery_proto.settings import InferySettings, LogLevel
from pydantic import Field

from control_plane.files.settings import default_files_url
from control_plane.settings import DEFAULT_DATABASE_URL


class BatchSettings(InferySettings):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        repr=False,  # may hold a password
        description="the control plane's store, where batches and their lines are kept",
    )
    files_url: str | None = Field(
        None,
        pattern=r"^(file|s3)://",
        description="the files service's storage (input files are read, output files written there)",
    )
    listener_url: str = Field(
        "http://127.0.0.1:8080",
        description="the Envoy listener each line is sent through (a replica's, or a Service before them);"
        " the same variable as ext_proc's",
    )
    batch_concurrency: int = Field(32, ge=1, le=10_000, description="lines one worker has in flight at once")
    batch_workspace_concurrency: int = Field(
        8, ge=1, le=10_000, description="lines one worker has in flight for one workspace at once"
    )
    batch_lease_s: float = Field(
        60,
        gt=0,
        description="a claimed line (or a batch being validated or finalized) is a worker's this"
        " long, renewed while it works; a dead worker's are taken over after it",
    )
    batch_poll_s: float = Field(
        0.5,
        gt=0,
        le=1,
        description="how often an idle worker looks for work (a cancel stops new lines within it)",
    )
    batch_max_attempts: int = Field(
        5,
        ge=1,
        description="sendings of a line that fails with a 5xx or a lost connection before its answer stands",
    )
    batch_request_timeout_s: float = Field(
        660, gt=0, description="a line's whole request (keep above INFERY_REQUEST_TIMEOUT_S)"
    )
    batch_lines_retention_days: float = Field(
        30,
        gt=0,
        description="a batch's lines (requests and answers) are deleted this long after it ended; the"
        " batch, its counts and its files stay",
    )
    batch_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics of the worker (0: off)"
    )
    batch_metrics_host: str = Field("127.0.0.1", description="address its /metrics listens on")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["json", "text"] = Field("json", description="`json` lines or plain `text`")

    @property
    def storage_url(self) -> str:
        """INFERY_FILES_URL, or the files service's default (``.infery/files`` in the working directory)."""
        return self.files_url or default_files_url()
