"""The files service's settings: every INFERY_* variable it reads, validated once at start.

Every one has a default that works on a laptop (`make up`); ``python -m control_plane.files
--help`` lists them, from this model (infery_proto.settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from infery_proto.settings import InferySettings, LogLevel
from pydantic import Field, model_validator

from control_plane.settings import DEFAULT_DATABASE_URL

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
# OpenAI's bounds for expires_after[seconds]: one hour to 30 days.
MIN_EXPIRES_AFTER_S = 3600
MAX_EXPIRES_AFTER_S = 30 * 24 * 3600
# An upload whose row is still `uploading` this long after it began was abandoned (a crash): a live
# one is cut by Envoy's INFERY_REQUEST_RECEIVE_TIMEOUT_S long before.
ABANDONED_AFTER_S = 24 * 3600


def default_files_url() -> str:
    """A directory under ``.infery/`` in the working directory (the checkout for `make up`)."""
    return (Path.cwd() / ".infery" / "files").resolve().as_uri()


class FilesSettings(InferySettings):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        repr=False,  # may hold a password
        description="the control plane's store, where file metadata is kept",
    )
    files_url: str | None = Field(
        None,
        pattern=r"^(file|s3)://",
        description="where file bytes are stored: `file:///path` (default `./.infery/files`) or"
        " `s3://bucket/prefix` (endpoint, region and credentials from the standard AWS_* variables)",
    )
    files_host: str = Field("127.0.0.1", description="address the files service listens on")
    files_port: int = Field(
        8082, ge=0, le=65535, description="the files service's port; Envoy its only client"
    )
    max_file_bytes: int = Field(
        DEFAULT_MAX_FILE_BYTES, ge=1, description="the largest file an upload may carry (else 413)"
    )
    files_min_expires_after_s: int = Field(
        MIN_EXPIRES_AFTER_S,
        ge=1,
        description="the smallest `expires_after[seconds]` accepted (OpenAI's: 3600; lower for tests)",
    )
    files_sweep_interval_s: float = Field(
        60.0, gt=0, description="how often expired files and abandoned uploads are deleted"
    )
    files_tls_cert_file: str | None = Field(
        None, description="mutual TLS: this service's certificate (default: INFERY_XDS_TLS_CERT_FILE)"
    )
    files_tls_key_file: str | None = Field(
        None, description="its private key (default: INFERY_XDS_TLS_KEY_FILE)"
    )
    files_tls_ca_file: str | None = Field(
        None,
        description="the CA Envoy's client certificate must chain to (default: INFERY_XDS_TLS_CA_FILE)",
    )
    xds_tls_cert_file: str | None = Field(None, description="the control plane's server certificate")
    xds_tls_key_file: str | None = Field(None, description="its private key")
    xds_tls_ca_file: str | None = Field(None, description="the CA of the data plane's client certificates")
    files_metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics of the files service on its own port (0: off)"
    )
    files_metrics_host: str = Field("127.0.0.1", description="address its /metrics listens on")
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["json", "text"] = Field("json", description="`json` lines or plain `text`")

    @property
    def storage_url(self) -> str:
        """Where the bytes go: INFERY_FILES_URL, or ``.infery/files`` in the working directory."""
        return self.files_url or default_files_url()

    @property
    def tls_cert_file(self) -> str | None:
        return self.files_tls_cert_file or self.xds_tls_cert_file

    @property
    def tls_key_file(self) -> str | None:
        return self.files_tls_key_file or self.xds_tls_key_file

    @property
    def tls_ca_file(self) -> str | None:
        return self.files_tls_ca_file or self.xds_tls_ca_file

    @model_validator(mode="after")
    def _tls(self) -> FilesSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("the files service's TLS certificate and key go together")
        if self.tls_ca_file and not self.tls_cert_file:
            raise ValueError("client certificates (a TLS CA file) need the service's own certificate")
        return self
