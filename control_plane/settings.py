"""The control plane's settings: every INFERY_* variable it reads, validated once at start.

Everything has a default that works on a laptop (`make up`), so a fresh checkout
starts with no configuration at all. ``python -m control_plane --help`` lists them all,
from this model (infery_proto.settings).
"""

from __future__ import annotations

from typing import Literal

from infery_proto.otel import grpc_host_port, sampled_share, traces_endpoint
from infery_proto.settings import InferySettings, LogLevel
from pydantic import Field, field_validator, model_validator

from control_plane.xds.envoy_config import ListenerSettings

DEFAULT_DATABASE_URL = "sqlite:///./.infery/infery.db"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_ADMIN_TOKEN_FILE = "./.infery/admin-token"
_LISTENER = ListenerSettings()  # the Envoy listener's defaults


class Settings(InferySettings):
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        repr=False,  # may hold a password
        description="the store: SQLite (`sqlite:///path`) or PostgreSQL (`postgresql+psycopg://...`)",
    )
    admin_token: str | None = Field(
        None,
        repr=False,
        description="the admin API's bearer token; unset: one is generated at first start into"
        " INFERY_ADMIN_TOKEN_FILE (its SHA-256 is stored)",
    )
    admin_token_file: str = Field(
        DEFAULT_ADMIN_TOKEN_FILE, description="where a generated admin token is written (mode 600)"
    )
    host: str = Field(
        "127.0.0.1", description="address the admin API and the gRPC port (xDS + usage) listen on"
    )
    admin_port: int = Field(8081, ge=0, le=65535, description="the admin API, dashboard, /metrics and probes")
    xds_port: int = Field(
        18000,
        ge=0,
        le=65535,
        description="gRPC: xDS to the data plane, its usage reports and stored responses (private)",
    )
    config: str | None = Field(None, description="a gateway.yaml applied at start, idempotently")
    responses_retention_days: float = Field(
        30, gt=0, description="how long the Responses API's stored responses (`store`) are kept, in days"
    )
    generated_keys_file: str | None = Field(
        None,
        description="where keys that INFERY_CONFIG declares without a secret get theirs (mode 600;"
        " default: the config's path + `.keys`)",
    )
    xds_tls_cert_file: str | None = Field(None, description="TLS on the gRPC port: this server's certificate")
    xds_tls_key_file: str | None = Field(None, description="its private key")
    xds_tls_ca_file: str | None = Field(
        None, description="the CA client certificates must chain to (set: every client must present one)"
    )
    xds_token: str | None = Field(
        None, repr=False, description="a bearer token every gRPC call must carry (prefer client certificates)"
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["json", "text"] = Field(
        "json", description="`json`: one JSON object per line (the request log too); `text`: plain lines"
    )
    # Envoy's listener, published over xDS (control_plane/xds/envoy_config.py).
    listen_host: str = Field(_LISTENER.host, description="address Envoy's listener binds")
    listen_port: int = Field(
        _LISTENER.port, ge=0, le=65535, description="Envoy's listener: the API clients call"
    )
    max_request_bytes: int = Field(
        DEFAULT_MAX_REQUEST_BYTES, ge=0, description="the largest request body Envoy buffers (else 413)"
    )
    tls_cert_file: str = Field("", description="HTTPS on Envoy's listener: the certificate")
    tls_key_file: str = Field("", description="its private key")
    upstream_ca_file: str = Field(_LISTENER.ca_file, description="CAs Envoy trusts for providers' TLS")
    request_timeout_s: float = Field(
        _LISTENER.request_timeout_s, gt=0, description="a request's whole time, answer and stream included"
    )
    connect_timeout_s: float = Field(
        _LISTENER.connect_timeout_s, gt=0, description="connecting to a provider"
    )
    eject_after_failures: int = Field(
        _LISTENER.eject_after_failures,
        ge=1,
        description="a fallback chain's target is ejected after this many consecutive failures",
    )
    ejection_s: float = Field(
        _LISTENER.ejection_s, gt=0, description="for this long (doubling on repeat ejections)"
    )
    request_headers_timeout_s: float = Field(
        _LISTENER.request_headers_timeout_s,
        gt=0,
        description="a request's headers must arrive within it (408)",
    )
    request_receive_timeout_s: float = Field(
        _LISTENER.request_receive_timeout_s, gt=0, description="the whole request, body included (408)"
    )
    idle_timeout_s: float = Field(
        _LISTENER.idle_timeout_s, gt=0, description="a client connection with no request open closes"
    )
    max_streams_per_connection: int = Field(
        _LISTENER.max_streams_per_connection, ge=1, description="HTTP/2 streams a client connection may open"
    )
    connection_buffer_bytes: int = Field(
        _LISTENER.connection_buffer_bytes,
        ge=16 * 1024,
        description="how far Envoy gets ahead of a client that reads slowly or not at all (and reads"
        " ahead from a provider); request bodies and non-streamed answers are still buffered whole",
    )
    client_send_timeout_s: float = Field(
        _LISTENER.client_send_timeout_s,
        gt=0,
        description="bytes a client has not taken for this long close its connection (TCP_USER_TIMEOUT;"
        " HTTP/2: a stream it opens no window for)",
    )
    ext_proc_message_timeout_s: float = Field(
        _LISTENER.ext_proc_message_timeout_s,
        gt=0,
        description="Envoy waits this long for each ext_proc answer (set ext_proc's the same)",
    )
    ext_proc_max_message_timeout_s: float = Field(
        _LISTENER.ext_proc_max_message_timeout_s,
        gt=0,
        description="a phase that asks (fetching media) gets up to this",
    )
    envoy_access_log: str = Field(
        _LISTENER.access_log,
        description="Envoy's access log, a JSON line per request: `stdout`, an absolute file path, or `off`",
    )

    envoy_traces_endpoint: str | None = Field(
        None,
        description="where Envoy's tracer sends its spans (OTLP/gRPC, `http://collector:4317`; `off`: Envoy"
        " does not trace); default: this process's OTEL_EXPORTER_OTLP_ENDPOINT (unset: no tracing)",
    )

    @field_validator("envoy_traces_endpoint")
    @classmethod
    def _traces_endpoint(cls, value: str | None) -> str | None:
        if value is not None and value != "off":
            grpc_host_port(value)  # a host is needed
        return value

    def envoy_traces(self) -> str:
        """The OTLP endpoint Envoy's listener traces to ("" when it does not trace)."""
        if self.envoy_traces_endpoint is not None:
            return "" if self.envoy_traces_endpoint == "off" else self.envoy_traces_endpoint
        return traces_endpoint() or ""

    @field_validator("envoy_access_log")
    @classmethod
    def _access_log_sink(cls, value: str) -> str:
        if value in ("stdout", "off") or value.startswith("/"):
            return value
        raise ValueError("must be stdout, off or an absolute file path")

    @model_validator(mode="after")
    def _tls_files_pair(self) -> Settings:
        if bool(self.xds_tls_cert_file) != bool(self.xds_tls_key_file):
            raise ValueError("INFERY_XDS_TLS_CERT_FILE and INFERY_XDS_TLS_KEY_FILE go together")
        if self.xds_tls_ca_file and not self.xds_tls_cert_file:
            raise ValueError("INFERY_XDS_TLS_CA_FILE (client certificates) needs INFERY_XDS_TLS_CERT_FILE")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("INFERY_TLS_CERT_FILE and INFERY_TLS_KEY_FILE go together")
        return self

    def listener(self) -> ListenerSettings:
        """What Envoy's listener, routes and clusters are built with."""
        return ListenerSettings(
            host=self.listen_host,
            port=self.listen_port,
            max_request_bytes=self.max_request_bytes,
            tls_cert_file=self.tls_cert_file,
            tls_key_file=self.tls_key_file,
            ca_file=self.upstream_ca_file,
            request_timeout_s=self.request_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            eject_after_failures=self.eject_after_failures,
            ejection_s=self.ejection_s,
            request_headers_timeout_s=self.request_headers_timeout_s,
            request_receive_timeout_s=self.request_receive_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            max_streams_per_connection=self.max_streams_per_connection,
            connection_buffer_bytes=self.connection_buffer_bytes,
            client_send_timeout_s=self.client_send_timeout_s,
            ext_proc_message_timeout_s=self.ext_proc_message_timeout_s,
            ext_proc_max_message_timeout_s=self.ext_proc_max_message_timeout_s,
            access_log=self.envoy_access_log,
            traces_endpoint=self.envoy_traces(),
            traces_sampled=sampled_share(),
        )
