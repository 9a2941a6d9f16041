"""Envoy's listener, routes and provider clusters, built from the store's snapshot.

Written as dicts in the shape of Envoy's YAML documentation, then parsed into
the protobuf (upb) classes of xds-protos: easy to compare with Envoy's docs,
fast to serialize.

How a request flows: the listener's ext_proc filter authenticates it, picks
the provider and rewrites it, and sets the cluster header (``wire.ROUTE_HEADER``);
the route sends it to the cluster that header names. Every header, metadata key and
error code shared with ext_proc comes from infery_proto.wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.config.trace.v3 import opentelemetry_pb2  # noqa: F401  (registers the type)
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.retry.priority.previous_priorities.v3 import (  # noqa: F401
    previous_priorities_config_pb2,
)
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.type.matcher.v3 import http_inputs_pb2
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from infery_proto.otel import grpc_host_port
from infery_proto.v1 import config_pb2
from infery_proto.wire import (
    ATTEMPT_METADATA,
    CHAIN_ROUTE,
    ERRORS,
    EXT_PROC_FILTER,
    EXT_PROC_REPLY_DETAILS,
    FILES_CLUSTER,
    FILES_PATH_PREFIX,
    FILES_SERVICE_PREFIXES,
    HOST_METADATA_ATTRIBUTE,
    INTERNAL_REQUEST_HEADERS,
    INTERNAL_RESPONSE_HEADERS,
    LOCAL_REPLY_HEADER,
    MODEL_ROUTE_HEADER,
    MODEL_USED_HEADER,
    REQUEST_ID_HEADER,
    ROUTE_HEADER,
    SERVED_HEADER,
    STREAMED_BODY_PATHS,
    TARGET_METADATA,
    TARGET_MODEL_FIELD,
    error_object,
)

LISTENER_NAME = "infery_http"
ROUTE_CONFIG_NAME = "infery_routes"
EXT_PROC_CLUSTER = "infery_ext_proc"  # static, in each replica's bootstrap (envoy/bootstrap.yaml)

_T = "type.googleapis.com/"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UNLIMITED = 1_000_000
_IPPROTO_TCP = 6  # Linux socket option level and name (netinet/tcp.h)
_TCP_USER_TIMEOUT = 18


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    max_request_bytes: int = 32 * 1024 * 1024
    tls_cert_file: str = ""
    tls_key_file: str = ""
    ca_file: str = "/etc/ssl/certs/ca-certificates.crt"
    request_timeout_s: float = 600.0
    connect_timeout_s: float = 5.0
    # Outlier detection on fallback chains: eject a target after this many
    # consecutive failures, for this long (doubling on repeat ejections).
    eject_after_failures: int = 5
    ejection_s: float = 10.0
    # Slow and greedy clients. The headers must arrive within
    # request_headers_timeout_s of their first byte, the whole request (headers and
    # body) within request_receive_timeout_s: a client trickling bytes cannot pin a
    # connection or a buffered body longer. Neither ever cuts an answer, however
    # long it streams. A connection with no request open closes after idle_timeout_s.
    request_headers_timeout_s: float = 10.0
    request_receive_timeout_s: float = 120.0
    idle_timeout_s: float = 60.0
    max_streams_per_connection: int = 100  # HTTP/2 concurrent streams per client connection
    # A client that stops reading. Envoy buffers at most connection_buffer_bytes towards a
    # client (or read ahead from a provider) before it stops reading the other side; a
    # request body or a non-streamed answer is still buffered whole, up to max_request_bytes.
    # Bytes the kernel cannot deliver to a client for client_send_timeout_s (TCP_USER_TIMEOUT;
    # for HTTP/2 also the end of an answer the client grants no window for) close the
    # connection, and with it the stream: what was served is charged, the buffers go.
    connection_buffer_bytes: int = 1024 * 1024
    client_send_timeout_s: float = 30.0
    # ext_proc must answer each message within ext_proc_message_timeout_s (a stopped
    # process is noticed fast); a phase that needs longer (fetching media) says so
    # and gets up to ext_proc_max_message_timeout_s. ext_proc reads the same variables.
    ext_proc_message_timeout_s: float = 5.0
    ext_proc_max_message_timeout_s: float = 60.0
    # Envoy's access log (ACCESS_LOG_FORMAT): "stdout", an absolute file path, or "off".
    access_log: str = "stdout"
    # Envoy's tracer: the OTLP/gRPC collector its spans go to ("": Envoy does not trace), and
    # the share of requests it samples (OTEL_TRACES_SAMPLER's ratio: infery_proto/otel.py).
    traces_endpoint: str = ""
    traces_sampled: float = 1.0


_M = TypeVar("_M", bound=Message)


def parse(doc: dict[str, Any], cls: type[_M]) -> _M:
    """An Envoy document as a message whose every nested `Any` is serialized deterministically.

    `json_format` packs nested messages (a filter's typed_config, an access log's JSON
    format: a Struct, i.e. a map) in an order that changes from process to process, so the
    same configuration had other bytes, and another version, after a control-plane restart:
    a reconnecting Envoy was sent its listener again and, its own hash differing too,
    rebuilt it.
    """
    message = json_format.ParseDict(doc, cls())
    _canonical(message)
    return message


def _canonical(message: Message) -> None:
    """Re-serialize, in place, every `Any` inside ``message`` deterministically (map entries
    in key order), recursively."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _canonical_item(item)
        elif field.is_repeated:
            for item in value:
                _canonical_item(item)
        else:
            _canonical_item(value)


def _canonical_item(message: Message) -> None:
    if message.DESCRIPTOR.full_name != "google.protobuf.Any":
        _canonical(message)
        return
    any_: any_pb2.Any = message  # type: ignore[assignment]
    name = any_.TypeName()
    try:
        inner = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()
    except KeyError:
        return  # a type this process does not know: left as it is
    inner.ParseFromString(any_.value)
    _canonical(inner)
    any_.value = inner.SerializeToString(deterministic=True)


def _duration(seconds: float) -> str:
    """A protobuf Duration in JSON: whole milliseconds, never exponent notation ("1e-05s")."""
    return f"{round(seconds * 1000) / 1000:.3f}s"


def _envelope(status: int, code: str, message: str) -> dict[str, Any]:
    """A local_reply_config mapper body: Envoy's own failures in the envelope ext_proc sends."""
    return {
        "json_format": error_object(status, code, message),
        "json_format_options": {"sort_properties": False},
    }


def _mapper(filter_: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    """Envoy's reply for the failures ``filter_`` selects: ``code``, at its status in the table."""
    status = ERRORS[code].status
    return {
        "filter": filter_,
        "status_code": status,
        "body_format_override": _envelope(status, code, message),
        # Tells ext_proc the body is already the envelope, not a provider's error.
        "headers_to_add": [
            {
                "header": {"key": LOCAL_REPLY_HEADER, "value": code},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def _flags_mapper(flags: list[str], code: str, message: str) -> dict[str, Any]:
    return _mapper({"response_flag_filter": {"flags": flags}}, code, message)


def _cel(expression: str) -> dict[str, Any]:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": _T + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression,
            },
        }
    }


def _status_mapper(code: str, message: str) -> dict[str, Any]:
    """Envoy's own replies with ``code``'s status (Envoy picked it: 413 body too large, 408), not
    ext_proc's immediate responses of that status (already the envelope, ``param`` included)."""
    status = ERRORS[code].status
    comparison = {"op": "EQ", "value": {"default_value": status, "runtime_key": f"_{status}"}}
    envoys_own = _cel(f"response.code_details != '{EXT_PROC_REPLY_DETAILS}'")
    return _mapper(
        {"and_filter": {"filters": [{"status_code_filter": {"comparison": comparison}}, envoys_own]}},
        code,
        message,
    )


def _local_replies() -> dict[str, Any]:
    # No top-level body_format: ext_proc's own immediate responses are local
    # replies too, and already carry the envelope.
    return {
        "mappers": [
            _flags_mapper(["UT"], "upstream_timeout", "The provider did not answer in time."),
            _flags_mapper(
                ["UF", "UH", "UO", "URX", "NC", "LH"],
                "upstream_unavailable",
                "The provider could not be reached.",
            ),
            _flags_mapper(["UC", "UR", "UPE", "UMSDR"], "upstream_error", "The provider failed."),
            _flags_mapper(["NR"], "not_found", "Unknown path."),
            # ext_proc unreachable, failing or too slow: Envoy's reply has no flag, only details.
            _mapper(
                _cel("response.code_details.startsWith('ext_proc')"),
                "gateway_unavailable",
                "The gateway's request processor is unavailable.",
            ),
            _status_mapper("request_too_large", "The request body is larger than this gateway accepts."),
            # request_headers_timeout / request_timeout: the client did not send its request in time.
            _status_mapper("request_timeout", "The request was not received in time."),
        ]
    }


# Envoy's access log: one JSON line per request, keyed by the request id ext_proc set in
# its headers phase (the one the client sees in x-request-id and the usage record holds).
# Only what is named here is logged: no header that may carry a secret (Authorization,
# x-api-key), no query string (a client may put a key there), no body. ``path`` is the
# request's path as Envoy last had it: the provider's once ext_proc routed the request,
# the client's when ext_proc or Envoy answered it (ext_proc's line has the client's endpoint).
ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "request_id": f"%REQ({REQUEST_ID_HEADER})%",
    "method": "%REQ(:METHOD)%",
    "path": "%PATH(NQ:PATH)%",  # NQ: without the query string
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "model": f"%RESP({MODEL_USED_HEADER})%",
}


def _access_logs(sink: str) -> list[dict[str, Any]]:
    if sink == "off":
        return []
    log_format = {"json_format": ACCESS_LOG_FORMAT, "json_format_options": {"sort_properties": False}}
    config: dict[str, Any] = {"log_format": log_format}
    if sink == "stdout":
        name, kind = "stdout", "stream.v3.StdoutAccessLog"
    else:
        name, kind = "file", "file.v3.FileAccessLog"
        config["path"] = sink
    typed = {"@type": _T + "envoy.extensions.access_loggers." + kind, **config}
    return [{"name": "envoy.access_loggers." + name, "typed_config": typed}]


ENVOY_SERVICE_NAME = "infery-envoy"


def tracing(endpoint: str, sampled: float = 1.0) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer on the listener, exporting to ``endpoint`` by OTLP/gRPC.

    Envoy joins the request's trace: its span is a child of the client's ``traceparent``, its
    span for each ext_proc stream passes a ``traceparent`` in that stream's gRPC metadata (so
    ext_proc's request span is its child: ext_proc/tracing.py), and each upstream attempt
    gets a span of its own. The collector is reached with Envoy's Google gRPC client by its
    address: no cluster to publish, so the listener stands alone. ``sampled``: the share of
    requests Envoy samples (``random_sampling``), the share ext_proc's sampler is given too.
    """
    host, port, tls = grpc_host_port(endpoint)
    google_grpc: dict[str, Any] = {"target_uri": f"{host}:{port}", "stat_prefix": "otlp_traces"}
    if tls:
        google_grpc["channel_credentials"] = {"ssl_credentials": {}}  # the system's roots
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": _T + "envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"google_grpc": google_grpc, "timeout": "5s"},
                "service_name": ENVOY_SERVICE_NAME,
            },
        },
        "spawn_upstream_span": True,
        "random_sampling": {"value": round(sampled * 100, 4)},
        # Envoy's default (100%) traces every request carrying x-client-trace-id (trace reason
        # "b"): a client could make the operator pay for, and store, every trace it asks for.
        "client_sampling": {"value": 0},
    }


def listener(s: ListenerSettings) -> listener_pb2.Listener:
    # Response bodies STREAMED until ext_proc has read the response headers, which say per
    # request whether the body streams (SSE) or is read whole (envoy_messages.response_headers).
    # Configured BUFFERED, Envoy held what a provider sent meanwhile without flow control and
    # answered a plain 500 once it passed the buffer (a burst bigger than the buffer, measured);
    # STREAMED, it stops reading the provider at the buffer instead.
    ext_proc = _ext_proc_filter(s, response_header_mode="SEND", response_body_mode="STREAMED")
    ext_proc["typed_config"]["allow_mode_override"] = True
    # A chain's grant and endpoint for its attempts (below), kept out of the headers.
    ext_proc["typed_config"]["metadata_options"] = {"receiving_namespaces": {"untyped": [ATTEMPT_METADATA]}}
    hcm = {
        "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "infery",
        "codec_type": "AUTO",
        "server_name": "infery",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        # The edge: X-Forwarded-For is the client's real address, not what it claims.
        # (ext_proc replaces any client x-request-id: it keys the usage record.)
        "use_remote_address": True,
        # No client is internal, whatever its address (a load balancer's is private): Envoy
        # strips every client's x-envoy-* control headers (retries, timeouts: chain_route).
        "internal_address_config": {},
        # Receiving the request is bounded; the answer only by the route's timeout
        # (request_timeout stops counting once the response starts).
        "request_headers_timeout": _duration(s.request_headers_timeout_s),
        "request_timeout": _duration(s.request_receive_timeout_s),
        "stream_idle_timeout": f"{int(s.request_timeout_s)}s",
        # HTTP/2: an answer fully handed to Envoy whose client opens no window for the rest.
        "stream_flush_timeout": _duration(s.client_send_timeout_s),
        "common_http_protocol_options": {"idle_timeout": _duration(s.idle_timeout_s)},
        # A client's HTTP/2 connection gets a bounded share: streams, and bytes in
        # flight (a stream may get 1 MiB ahead of Envoy, the connection 4 MiB).
        "http2_protocol_options": {
            "max_concurrent_streams": s.max_streams_per_connection,
            "initial_stream_window_size": 1 << 20,
            "initial_connection_window_size": 4 << 20,
        },
        "rds": {
            "route_config_name": ROUTE_CONFIG_NAME,
            "config_source": {"ads": {}, "resource_api_version": "V3"},
        },
        "http_filters": [
            ext_proc,
            _upload_filter(s),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": _T + "envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                },
            },
        ],
        "local_reply_config": _local_replies(),
        "access_log": _access_logs(s.access_log),
    }
    if s.traces_endpoint:
        hcm["tracing"] = tracing(s.traces_endpoint, s.traces_sampled)
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if s.tls_cert_file:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": s.tls_cert_file},
                            "private_key": {"filename": s.tls_key_file},
                        }
                    ],
                    "alpn_protocols": ["h2", "http/1.1"],
                },
            },
        }
    doc = {
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": s.host, "port_value": s.port}},
        # How far Envoy gets ahead of a client that reads slowly, or not at all; whole
        # request bodies and answers are buffered up to the route's larger limit (_route).
        "per_connection_buffer_limit_bytes": s.connection_buffer_bytes,
        # Accepted sockets inherit it: bytes unacknowledged (a full window) for this long
        # close the connection, in the kernel, whatever the protocol (HTTP/1, HTTP/2, TLS).
        "socket_options": [
            {
                "description": "TCP_USER_TIMEOUT: a client that stops reading",
                "level": _IPPROTO_TCP,
                "name": _TCP_USER_TIMEOUT,
                "int_value": round(s.client_send_timeout_s * 1000),
            }
        ],
        "filter_chains": [chain],
    }
    return parse(doc, listener_pb2.Listener)


UPLOAD_FILTER = "infery.ext_proc.upload"


def _upload_filter(s: ListenerSettings) -> dict[str, Any]:
    """ext_proc again, for uploads only: off everywhere but on streamed_body_route, where it
    stands in for the listener's ext_proc (which that route turns off).

    An upload's provider is named in its form, not its headers: ext_proc must read the first
    chunks before it answers the headers (``send_body_without_waiting_for_header_response``,
    on a STREAMED request body). That option also changes how Envoy handles the *response*
    of every request it applies to (measured: an SSE answer switched to STREAMED reached the
    client whole, at its end), so it lives on this second instance of the filter, never on
    the one every other request takes. An upload's answer is buffered (json, text, srt, vtt,
    verbose_json: small), so it loses nothing.
    """
    doc = _ext_proc_filter(s, response_header_mode="SEND", response_body_mode="BUFFERED")
    config = doc["typed_config"]
    config["processing_mode"]["request_body_mode"] = "STREAMED"
    config["send_body_without_waiting_for_header_response"] = True
    config["allow_mode_override"] = True
    config["metadata_options"] = {"receiving_namespaces": {"untyped": [ATTEMPT_METADATA]}}
    return {"name": UPLOAD_FILTER, "disabled": True, "typed_config": config}


def _route(name: str, s: ListenerSettings) -> dict[str, Any]:
    """A route to the cluster ext_proc picked (``wire.ROUTE_HEADER``), with the gateway's request
    timeout; a model's own timeouts come with the request (``x-envoy-upstream-rq-timeout-ms``)."""
    action: dict[str, Any] = {"cluster_header": ROUTE_HEADER, "timeout": f"{int(s.request_timeout_s)}s"}
    match: dict[str, Any] = {"prefix": "/"}  # the virtual host's matcher already picked this route
    doc: dict[str, Any] = {
        "name": name,
        "match": match,
        "route": action,
        # A request body (vision, PDF, long context) is buffered whole for ext_proc and for a
        # chain's retries, and so is a non-streamed answer: above the listener's per-connection
        # buffer, up to the configured limit (Envoy raises the stream's buffer to this).
        "request_body_buffer_limit": s.max_request_bytes,
        # The client's address is Envoy's to record, not the provider's to read (ext_proc's
        # allow-list drops it too; here it goes whatever ext_proc did).
        "request_headers_to_remove": [*INTERNAL_REQUEST_HEADERS, "x-envoy-external-address"],
        "response_headers_to_remove": list(INTERNAL_RESPONSE_HEADERS),
    }
    return doc


# The gateway's internal markers (wire.INTERNAL_RESPONSE_HEADERS) are removed from every
# upstream response before the listener's ext_proc reads it: a provider that sends the
# local-reply header must not pass its answer off as the gateway's own error (served free),
# nor claim with the served header that another model answered. Envoy's own local replies
# (the mapper above) and an attempt's ext_proc reply still carry them (measured: the route's
# removal runs before both). Which provider headers reach the client is ext_proc's
# allow-list (ext_proc/header_policy.py).


def default_route(s: ListenerSettings) -> route_components_pb2.Route:
    """Every request to one provider (a model without a chain, or an endpoint a chain does
    not serve): the cluster ext_proc picked, once."""
    return parse(_route("default", s), route_components_pb2.Route)


def chain_route(s: ListenerSettings) -> route_components_pb2.Route:
    """Every fallback chain's requests: the same route for all, so that creating, changing or
    deleting a chain never changes the route configuration (only the chain's cluster).

    What all chains share is here: each retry goes to the next priority of the chain's cluster
    (its next target), a short back-off, and the answering target's model in the served
    header. What differs per chain comes with each request, set by ext_proc from the chain's
    Route (ext_proc/header_policy.py: ``router_headers``): ``x-envoy-retry-on`` (OR-ed with
    this policy's, which is empty), ``x-envoy-max-retries`` (replaces ``num_retries``, 0 here:
    without ext_proc's headers nothing is retried), ``x-envoy-retriable-status-codes`` (added
    to this policy's, none), and the per-try and total timeouts
    (``x-envoy-upstream-rq-per-try-timeout-ms``, ``x-envoy-upstream-rq-timeout-ms``, each
    replacing the route's). Envoy strips these headers from clients (no client address is
    internal: the listener's ``internal_address_config``) and ext_proc removes any that remain
    before it sets its own (``allow_envoy`` in its mutation rules).
    """
    doc = _route(CHAIN_ROUTE, s)
    doc["route"]["retry_policy"] = {
        "num_retries": 0,
        # Every retry goes to the next priority: the next target of the chain.
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": _T
                + "envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.002s"},
    }
    # Which target of the chain answered, for the listener's ext_proc (which removes it).
    doc["response_headers_to_add"] = [
        {
            "header": {
                "key": SERVED_HEADER,
                "value": f"%UPSTREAM_METADATA({TARGET_METADATA}:{TARGET_MODEL_FIELD})%",
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    return parse(doc, route_components_pb2.Route)


def files_route(s: ListenerSettings) -> route_components_pb2.Route:
    """``/v1/files*`` to the files service, with ext_proc on the headers only.

    ext_proc authenticates the request's headers and asserts the caller's identity
    (ext_proc/endpoints/files.py); the body streams to the service. This route's ext_proc
    override makes that so from the first byte: with the listener's BUFFERED mode, a body
    arriving while ext_proc reads the headers is held as if to be buffered, and past the
    buffer limit Envoy answers 413 itself (measured: a 100 MB upload on loopback). Any
    path under the prefix takes it; ext_proc answers those that are not the files API.
    """
    doc = {
        "name": "files",
        "match": {"prefix": FILES_PATH_PREFIX},
        "route": {"cluster": FILES_CLUSTER, "timeout": f"{int(s.request_timeout_s)}s"},
        "request_headers_to_remove": [ROUTE_HEADER, MODEL_ROUTE_HEADER, "x-envoy-external-address"],
        "response_headers_to_remove": list(INTERNAL_RESPONSE_HEADERS),
        "typed_per_filter_config": {
            EXT_PROC_FILTER: {
                "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "overrides": {
                    "processing_mode": {
                        "request_header_mode": "SEND",
                        "request_body_mode": "NONE",
                        "request_trailer_mode": "SKIP",
                        "response_header_mode": "SKIP",
                        "response_body_mode": "NONE",
                        "response_trailer_mode": "SKIP",
                    }
                },
            }
        },
    }
    return parse(doc, route_components_pb2.Route)


# The listener's ext_proc modes for a streamed request body: the body chunk by chunk, the
# response as on every other route (the exchange switches an SSE answer to STREAMED itself).
_STREAMED_BODY_MODE = {
    "request_header_mode": "SEND",
    "request_body_mode": "STREAMED",
    "request_trailer_mode": "SKIP",
    "response_header_mode": "SEND",
    "response_body_mode": "BUFFERED",
    "response_trailer_mode": "SKIP",
}


def streamed_body_route(s: ListenerSettings) -> route_components_pb2.Route:
    """The default route, for the paths whose request bodies ext_proc reads as a stream
    (wire.STREAMED_BODY_PATHS: audio uploads), with ext_proc's per-route mode STREAMED.

    Envoy picks ext_proc's mode from the route matched when the request's headers arrive,
    before ext_proc has seen anything: a route per path is how an upload streams from its
    first byte instead of being buffered whole. ext_proc then holds the headers' answer
    until the form's ``model`` field has passed (``send_body_without_waiting_for_header_response``)
    and re-routes to the model's provider or chain as for any request: the mode stays.
    """
    doc = _route("streamed_body", s)
    filter_config = _T + "envoy.config.route.v3.FilterConfig"
    doc["typed_per_filter_config"] = {
        EXT_PROC_FILTER: {"@type": filter_config, "disabled": True},
        UPLOAD_FILTER: {
            "@type": filter_config,
            "config": {
                "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "overrides": {"processing_mode": _STREAMED_BODY_MODE},
            },
        },
    }
    return parse(doc, route_components_pb2.Route)


def route_configuration(
    default: route_components_pb2.Route,
    chain: route_components_pb2.Route,
    files: route_components_pb2.Route | None = None,
    *,
    streamed: route_components_pb2.Route | None = None,
) -> route_pb2.RouteConfiguration:
    """The gateway's routes; the same whatever the chains (it depends on the settings alone).

    The virtual host's generic matcher looks the model-route header up (`exact_match_map`):
    ``wire.CHAIN_ROUTE`` takes the chain route (:func:`chain_route`); a request without the
    header takes `on_no_match`: by its path's prefix, the files route for ``/v1/files``
    (:func:`files_route`) and the streamed-body route for wire.STREAMED_BODY_PATHS
    (:func:`streamed_body_route`: audio uploads), else the default route. Each chain used to
    be a route entry of its own: every chain change re-sent the whole configuration, which
    Envoy rebuilt whole (~30 ms at 1,000 chains).
    """
    by_prefix: list[tuple[str, route_components_pb2.Route]] = []
    if files is not None:  # the files service serves the Batch API too (control_plane/batches/)
        by_prefix += [(prefix, _with_prefix(files, prefix)) for prefix in FILES_SERVICE_PREFIXES]
    if streamed is not None:
        by_prefix += [(path, streamed) for path in STREAMED_BODY_PATHS]
    config = route_pb2.RouteConfiguration(name=ROUTE_CONFIG_NAME)
    host = config.virtual_hosts.add(name="gateway", domains=["*"])
    tree = host.matcher.matcher_tree
    tree.input.name = MODEL_ROUTE_HEADER
    tree.input.typed_config.Pack(
        http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=MODEL_ROUTE_HEADER),
        type_url_prefix="type.googleapis.com/",
    )
    _route_action(tree.exact_match_map.map[CHAIN_ROUTE].action, chain)
    if not by_prefix:
        _route_action(host.matcher.on_no_match.action, default)
        return config
    by_path = host.matcher.on_no_match.matcher
    for prefix, route in by_prefix:
        rule = by_path.matcher_list.matchers.add()
        predicate = rule.predicate.single_predicate
        predicate.input.name = "path"
        predicate.input.typed_config.Pack(
            http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=":path"),
            type_url_prefix="type.googleapis.com/",
        )
        predicate.value_match.prefix = prefix
        _route_action(rule.on_match.action, route)
    _route_action(by_path.on_no_match.action, default)
    return config


def _with_prefix(route: route_components_pb2.Route, prefix: str) -> route_components_pb2.Route:
    """``route`` matching ``prefix``: Envoy checks a matcher's route against its own match too."""
    if route.match.prefix == prefix:
        return route
    copy = route_components_pb2.Route()
    copy.CopyFrom(route)
    copy.match.prefix = prefix
    return copy


_ROUTE_TYPE = "type.googleapis.com/" + route_components_pb2.Route.DESCRIPTOR.full_name


def _route_action(action: Any, entry: route_components_pb2.Route) -> None:
    action.name = entry.name
    action.typed_config.type_url = _ROUTE_TYPE  # Any.Pack(entry), deterministically
    action.typed_config.value = entry.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class _Upstream:
    """Where a provider's base URL points."""

    host: str
    port: int
    tls: bool

    @classmethod
    def of(cls, provider: config_pb2.Provider) -> _Upstream:
        url = urlsplit(provider.base_url)
        tls = url.scheme == "https"
        return cls(url.hostname or "localhost", url.port or (443 if tls else 80), tls)

    @property
    def is_ip(self) -> bool:
        return self.host.replace(".", "").isdigit() or ":" in self.host

    def endpoint(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "endpoint": {
                "address": {"socket_address": {"address": self.host, "port_value": self.port}},
                "hostname": self.host,
            }
        }
        if metadata:
            doc["metadata"] = {"filter_metadata": metadata}
        return doc

    def tls_socket(self, s: ListenerSettings) -> dict[str, Any]:
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": self.host,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    # The certificate must be signed by a trusted CA *and* name this host:
                    # otherwise any CA-signed certificate could collect provider keys.
                    "validation_context": {
                        "trusted_ca": {"filename": s.ca_file},
                        "match_typed_subject_alt_names": [
                            {
                                "san_type": "IP_ADDRESS" if self.is_ip else "DNS",
                                "matcher": {"exact": self.host},
                            }
                        ],
                    },
                },
            },
        }


def _cluster(
    name: str,
    priorities: list[list[dict[str, Any]]],
    any_tls: bool,
    any_dns: bool,
    s: ListenerSettings,
    http_filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    protocol: dict[str, Any] = (
        # ALPN picks HTTP/2 where the provider offers it; plain-text endpoints speak HTTP/1.1.
        {"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
        if any_tls
        else {"explicit_http_config": {"http_protocol_options": {}}}
    )
    options: dict[str, Any] = {
        "@type": _T + _HTTP_OPTIONS,
        "common_http_protocol_options": {"idle_timeout": "60s"},
        **protocol,
    }
    if http_filters:
        options["http_filters"] = http_filters
    return {
        "name": name,
        "type": "STRICT_DNS" if any_dns else "STATIC",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _duration(s.connect_timeout_s),
        # Read ahead from a provider, so far and no further while the client is slower.
        "per_connection_buffer_limit_bytes": s.connection_buffer_bytes,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"priority": i, "lb_endpoints": endpoints} for i, endpoints in enumerate(priorities)
            ],
        },
        # LLM calls are long: Envoy's default of 1024 concurrent requests is far too low.
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": _UNLIMITED,
                    "max_pending_requests": _UNLIMITED,
                    "max_requests": _UNLIMITED,
                    "max_retries": _UNLIMITED,
                }
            ]
        },
        "typed_extension_protocol_options": {_HTTP_OPTIONS: options},
    }


def provider_cluster(provider: config_pb2.Provider, s: ListenerSettings) -> cluster_pb2.Cluster:
    upstream = _Upstream.of(provider)
    doc = _cluster(provider.cluster, [[upstream.endpoint()]], upstream.tls, not upstream.is_ip, s)
    if upstream.tls:
        doc["transport_socket"] = upstream.tls_socket(s)
    return parse(doc, cluster_pb2.Cluster)


def chain_cluster(
    name: str,
    targets: list[tuple[config_pb2.Model, config_pb2.Provider]],
    s: ListenerSettings,
) -> cluster_pb2.Cluster:
    """A fallback chain as one cluster: target i is priority i.

    Each endpoint carries the model it serves in its metadata; the upstream
    ext_proc filter reads it to translate each attempt for its own provider,
    and the listener's ext_proc reads it to know which target answered.
    Outlier detection ejects a failing target so that the next requests go
    straight to the next priority instead of waiting for it to fail again.
    """
    priorities = []
    sockets: dict[str, dict[str, Any]] = {}
    for model, provider in targets:
        upstream = _Upstream.of(provider)
        socket_key = f"{upstream.host}:{upstream.port}" if upstream.tls else "plaintext"
        if upstream.tls:
            sockets[socket_key] = upstream.tls_socket(s)
        metadata = {
            TARGET_METADATA: {TARGET_MODEL_FIELD: model.slug},
            "envoy.transport_socket_match": {"socket": socket_key},
        }
        priorities.append([upstream.endpoint(metadata)])
    ups = [_Upstream.of(p) for _, p in targets]
    doc = _cluster(
        name,
        priorities,
        any(u.tls for u in ups),
        any(not u.is_ip for u in ups),
        s,
        http_filters=[_attempt_filter(s), _UPSTREAM_CODEC],
    )
    doc["transport_socket_matches"] = [
        {"name": key, "match": {"socket": key}, "transport_socket": socket} for key, socket in sockets.items()
    ] + [
        {
            "name": "plaintext",
            "match": {"socket": "plaintext"},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": _T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
            },
        }
    ]
    # Without panic mode an ejected priority spills all its traffic to the next one.
    doc["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    doc["outlier_detection"] = {
        "consecutive_5xx": s.eject_after_failures,
        "consecutive_gateway_failure": s.eject_after_failures,
        "interval": "1s",
        "base_ejection_time": _duration(s.ejection_s),
        "max_ejection_percent": 100,
    }
    return parse(doc, cluster_pb2.Cluster)


def _ext_proc_filter(
    s: ListenerSettings, response_header_mode: str, response_body_mode: str
) -> dict[str, Any]:
    """ext_proc with the request phases every use needs: headers, then the whole body.

    Each message must be answered within the (short) message timeout: a stopped
    ext_proc costs a request seconds, not minutes, and Envoy's health checks take
    it out of the cluster meanwhile. A slow phase asks for more time itself
    (``override_message_timeout``, up to ``max_message_timeout``).
    """
    return {
        "name": EXT_PROC_FILTER,
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER}, "timeout": "60s"},
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": response_header_mode,
                "response_body_mode": response_body_mode,
                "response_trailer_mode": "SKIP",
            },
            "message_timeout": _duration(s.ext_proc_message_timeout_s),
            "max_message_timeout": _duration(s.ext_proc_max_message_timeout_s),
            # allow_envoy: the router's x-envoy-* headers are ext_proc's to remove and set
            # (chain_route); without it, those mutations were silently rejected.
            "mutation_rules": {"allow_all_routing": True, "allow_envoy": True},
        },
    }


def _attempt_filter(s: ListenerSettings) -> dict[str, Any]:
    """ext_proc as an upstream filter: called once per attempt, with the original body."""
    doc = _ext_proc_filter(s, response_header_mode="SKIP", response_body_mode="NONE")
    doc["typed_config"]["request_attributes"] = [HOST_METADATA_ATTRIBUTE]
    # An upload's attempt switches its request body to STREAMED (ext_proc/attempt.py).
    doc["typed_config"]["allow_mode_override"] = True
    doc["typed_config"]["metadata_options"] = {"forwarding_namespaces": {"untyped": [ATTEMPT_METADATA]}}
    return doc


_UPSTREAM_CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {"@type": _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}
