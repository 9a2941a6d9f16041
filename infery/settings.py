"""The ``infery`` commands' settings: every INFERY_* variable ``infery up``/``bootstrap``/``certs``,
the end-to-end ``Stack`` and the image's entrypoint read, validated once.

The processes ``infery up`` starts get the same environment and read their own
(control_plane/settings.py, ext_proc/settings.py); ``infery --help`` lists all three.
"""

from __future__ import annotations

from pathlib import Path

from infery_proto.settings import InferySettings
from pydantic import Field, model_validator

from infery.certs import TlsFiles

DEFAULT_METRICS_PORT = 9464
DEFAULT_ENVOY_STATS_PORT = 9902


class CliSettings(InferySettings):
    home: str | None = Field(
        None,
        description="where `infery up` keeps its state (default: .infery in the checkout or working dir)",
    )
    admin_token: str | None = Field(
        None,
        repr=False,
        description="the admin token `infery up` gives the control plane (default: made once into"
        " INFERY_HOME/admin-token)",
    )
    database_url: str | None = Field(
        None,
        repr=False,
        description="passed on to the control plane (default under `infery up`: INFERY_HOME/infery.db)",
    )
    files_url: str | None = Field(
        None, description="passed on to the files service (default under `infery up`: INFERY_HOME/files)"
    )
    listen_port: int = Field(8080, ge=0, le=65535, description="Envoy's listener")
    admin_port: int = Field(8081, ge=0, le=65535, description="the control plane's admin API")
    xds_port: int = Field(18000, ge=0, le=65535, description="the control plane's gRPC port (xDS + usage)")
    ext_proc_port: int = Field(
        50051, ge=0, le=65535, description="the first ext_proc's port (process i: + i)"
    )
    files_port: int = Field(
        8082, ge=0, le=65535, description="the files service (`/v1/files` storage), reached by Envoy only"
    )
    ext_procs: int = Field(
        1, ge=1, description="ext_proc processes per replica (more than one: INFERY_REDIS_URL)"
    )
    redis_url: str | None = Field(
        None, repr=False, description="checked with INFERY_EXT_PROCS before anything starts"
    )
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT, ge=0, le=65535, description="ext_proc process i's /metrics port: this + i"
    )
    envoy_stats_port: int = Field(
        DEFAULT_ENVOY_STATS_PORT,
        ge=0,
        le=65535,
        description="Envoy's stats-only listener (/stats/prometheus, /ready)",
    )
    envoy_stats_host: str | None = Field(
        None, description="its address (default: the bootstrap's 0.0.0.0; 127.0.0.1 under `infery up`)"
    )
    envoy_bootstrap: str | None = Field(
        None, description="Envoy's bootstrap template (default: envoy/bootstrap.yaml)"
    )
    max_connections: int | None = Field(
        None, ge=1, description="downstream connections per Envoy (default: the bootstrap's 10000)"
    )
    envoy_max_heap_bytes: int | None = Field(
        None,
        ge=1,
        description="the heap Envoy's overload actions measure against (default: the bootstrap's 1 GiB)",
    )
    ext_proc_token: str | None = Field(
        None,
        repr=False,
        description="ext_proc on TCP: the token `infery bootstrap --ext-proc-token-file` writes",
    )
    xds_token: str | None = Field(
        None, repr=False, description="a bearer token Envoy sends to the control plane"
    )
    xds_tls_ca_file: str | None = Field(
        None, description="TLS to the control plane: the CA (with _CERT_FILE, _KEY_FILE)"
    )
    xds_tls_cert_file: str | None = Field(None, description="the data plane's client certificate")
    xds_tls_key_file: str | None = Field(None, description="its private key")
    health_url: str = Field(
        "http://127.0.0.1:8081/healthz",
        description="`infery-entrypoint healthcheck`: the URL that must answer 2xx",
    )
    health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`infery-entrypoint healthcheck`: a loopback TCP port instead of the URL",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> CliSettings:
        given = [self.xds_tls_ca_file, self.xds_tls_cert_file, self.xds_tls_key_file]
        if any(given) and not all(given):
            raise ValueError("INFERY_XDS_TLS_CERT_FILE, _KEY_FILE and _CA_FILE go together")
        return self

    def xds_tls(self) -> TlsFiles | None:
        """The data plane's files for mutual TLS to the control plane; None when not configured."""
        if not (self.xds_tls_ca_file and self.xds_tls_cert_file and self.xds_tls_key_file):
            return None
        return TlsFiles(Path(self.xds_tls_ca_file), Path(self.xds_tls_cert_file), Path(self.xds_tls_key_file))
