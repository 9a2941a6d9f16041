"""ext_proc's settings: every INFERY_* variable it reads, validated once at start.

``python -m ext_proc --help`` lists them, from this model (infery_proto.settings). A few
have a command-line flag too (``--port``, ``--uds``, ...), which wins over the variable.
"""

from __future__ import annotations

from typing import Annotated, Literal

from infery_proto.settings import InferySettings, LogLevel
from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from ext_proc.deadline import MessageDeadline
from ext_proc.media_fetch import DEFAULT_MAX_URLS
from ext_proc.translators.sse import DEFAULT_MAX_EVENT_BYTES

_DEADLINE = MessageDeadline()


def _comma_list(value: object) -> object:
    return frozenset(h.strip() for h in value.split(",") if h.strip()) if isinstance(value, str) else value


class ExtProcSettings(InferySettings):
    ext_proc_host: str = Field("127.0.0.1", description="address of the gRPC port (`--host`)")
    ext_proc_port: int = Field(50051, ge=0, le=65535, description="the gRPC port Envoy calls (`--port`)")
    ext_proc_uds: str | None = Field(
        None,
        description="listen on this Unix socket instead (`--uds`): ~15% more requests/s, and only processes"
        " that may open its directory reach it",
    )
    ext_proc_tcp: bool | None = Field(
        None, description="listen on TCP beside INFERY_EXT_PROC_UDS (`--tcp`; default: only without a socket)"
    )
    ext_proc_server: Literal["h2", "grpcio"] = Field(
        "h2",
        description="the gRPC server Envoy talks to: `h2`, ext_proc's own (the fast path), or `grpcio`,"
        " grpc.aio with the same methods, addresses and token (the switch-off: ~2.5x the CPU; `--server`)",
    )
    ext_proc_token: str | None = Field(
        None,
        repr=False,
        description="the token Envoy sends on every stream; required on TCP (the port puts provider keys on"
        " requests)",
    )
    ext_procs: int = Field(
        1, ge=1, description="ext_proc processes serving this gateway; more than one needs INFERY_REDIS_URL"
    )
    control_plane: str = Field(
        "127.0.0.1:18000",
        description="the control plane's gRPC address: xDS, usage, stored responses (`--control-plane`)",
    )
    xds_token: str | None = Field(
        None, repr=False, description="bearer token the control plane's gRPC port asks for"
    )
    xds_tls_ca_file: str | None = Field(
        None, description="TLS to the control plane: the CA its certificate chains to"
    )
    xds_tls_cert_file: str | None = Field(None, description="this process's client certificate (mutual TLS)")
    xds_tls_key_file: str | None = Field(None, description="its private key")
    redis_url: str | None = Field(
        None,
        repr=False,
        description="Redis: limits and idempotency shared by processes and replicas (default: in-process)",
    )
    files_service: str | None = Field(
        None,
        description="the files service's URL (`https://HOST:8082`), where `file_id` parts"
        " (chat, Responses, Messages) are read; with INFERY_XDS_TLS_* ext_proc presents the data plane's"
        " client certificate to it",
    )
    listener_url: str | None = Field(
        None,
        description="this replica's own listener as ext_proc reaches it (`http://127.0.0.1:8080`): chat's"
        " `n` > 1 on a provider that gives one choice per call is asked of it, one call per choice"
        " (unset: such an `n` is 400 unsupported_parameter; an HTTPS listener: a name its certificate has)",
    )
    media_allowed_hosts: Annotated[frozenset[str], NoDecode, BeforeValidator(_comma_list)] = Field(
        frozenset(),
        description="comma-separated host:port that may serve image/PDF URLs from private addresses",
    )
    max_media_urls: int = Field(
        DEFAULT_MAX_URLS, ge=0, description="image/PDF URLs fetched for one request, at most (more: 400)"
    )
    max_sse_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES,
        ge=1024,
        description="the longest provider stream event read; a longer one cuts the stream (upstream_error)",
    )
    max_audio_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="the largest audio upload (transcriptions, translations); larger: 413 request_too_large",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Envoy's request buffer (set the control plane's the same): "
        "an upload to a fallback chain larger than it is refused (413)",
    )
    audio_model_lookahead_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        description="how far into an upload ext_proc reads for its `model` field when it follows the file",
    )
    ext_proc_message_timeout_s: float = Field(
        _DEADLINE.message_timeout_s,
        gt=0,
        description="Envoy's wait for each answer (set the control plane's the same)",
    )
    ext_proc_max_message_timeout_s: float = Field(
        _DEADLINE.max_message_timeout_s, gt=0, description="what a slow phase (fetching media) asks Envoy for"
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Prometheus /metrics, one port per process (0: off; `--metrics-port`)",
    )
    metrics_host: str = Field("0.0.0.0", description="address /metrics listens on (`--metrics-host`)")
    metrics_workspace_label: bool = Field(
        False, description="label request metrics with the workspace (cardinality: one series per workspace)"
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR (`--log-level`)")
    log_format: Literal["json", "text"] = Field(
        "json", description="this process's log: `json` lines or `text` (request lines are JSON either way)"
    )
    request_log_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of successful requests logged (failures always are): 1 all, 0 none",
    )
    uvloop: bool = Field(True, description="run on uvloop (false: asyncio's own loop)")
    loop_watch_ms: float = Field(
        0,
        ge=0,
        description="log every event-loop stall longer than this, split into own CPU, GC and waiting for a"
        " CPU (0: not watched; `make bench-scale` sets 10)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExtProcSettings:
        if (self.xds_tls_cert_file or self.xds_tls_key_file) and not self.xds_tls_ca_file:
            raise ValueError(
                "INFERY_XDS_TLS_CERT_FILE/_KEY_FILE need INFERY_XDS_TLS_CA_FILE (the server's CA)"
            )
        if bool(self.xds_tls_cert_file) != bool(self.xds_tls_key_file):
            raise ValueError("INFERY_XDS_TLS_CERT_FILE and INFERY_XDS_TLS_KEY_FILE go together")
        return self

    def deadline(self) -> MessageDeadline:
        return MessageDeadline(self.ext_proc_message_timeout_s, self.ext_proc_max_message_timeout_s)
