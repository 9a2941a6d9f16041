"""Run one ext_proc process: ``python -m ext_proc --port 50051 --control-plane 127.0.0.1:18000``.

Several processes on consecutive ports (or one Unix socket each, ``--uds``) share
the load: Envoy lists each as an endpoint of its ext_proc cluster (one process per
address; SO_REUSEPORT does not spread Envoy's long-lived HTTP/2 connections).

ext_proc puts provider keys on requests, so whoever reaches it can have them: with
``--uds`` it listens on that socket only (its directory's permissions guard it) unless
``--tcp`` asks for the port too; on TCP every stream must carry the token in
INFERY_EXT_PROC_TOKEN (Envoy sends it from its bootstrap), and ext_proc refuses to
listen on TCP without one.

ext_proc serves Envoy with its own HTTP/2 server (``ext_proc.h2_grpc``, the measured fast
path); ``--server grpcio`` (INFERY_EXT_PROC_SERVER=grpcio) serves the same methods on the
same addresses with ``grpc.aio`` instead (``ext_proc.grpcio_server``), so that our server
can always be switched off.

Settings come from INFERY_* variables (ext_proc/settings.py; ``--help`` lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import Protocol

from infery_proto import logs

from ext_proc import file_refs, grpcio_server, h2_grpc, health, malloc_tuning, metrics, request_log, tracing
from ext_proc.control_plane_channel import channel_credentials
from ext_proc.exchange import Services
from ext_proc.extra_calls import Listener
from ext_proc.h2_grpc import Method
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.loop_watch import LoopWatch
from ext_proc.media_fetch import MediaPolicy
from ext_proc.response_store import ResponseStore
from ext_proc.server import methods
from ext_proc.settings import ExtProcSettings
from ext_proc.shared_state import open_state, require_shared_store
from ext_proc.usage_spool import UsageReporter
from ext_proc.xds_client import ConfigSubscriber

log = logging.getLogger("infery.ext_proc")


class GrpcServer(Protocol):
    """What both gRPC servers offer: ``ext_proc.h2_grpc.Server`` and ``ext_proc.grpcio_server.Server``."""

    async def start(self, host: str, port: int, token: bytes | None = None) -> int: ...

    async def start_unix(self, path: str) -> None: ...

    async def stop(self, grace: float) -> None: ...


# INFERY_EXT_PROC_SERVER: ours by default; grpcio switches it off (2.5 times the CPU per request).
SERVERS: dict[str, Callable[[dict[str, Method]], GrpcServer]] = {
    "h2": h2_grpc.Server,
    "grpcio": grpcio_server.Server,
}


async def _first(ready: asyncio.Event, stop: asyncio.Event, timeout: float) -> bool:
    """Wait until `ready` or `stop` is set (True), or `timeout` passes (False)."""
    waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())]
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return bool(done)


async def serve(s: ExtProcSettings, spool: str, ready_timeout: float) -> None:
    metadata = (("authorization", "Bearer " + s.xds_token),) if s.xds_token else ()
    credentials = channel_credentials(s.xds_tls_ca_file, s.xds_tls_cert_file, s.xds_tls_key_file)
    gauges = metrics.GatewayMetrics(workspace_label=s.metrics_workspace_label)
    subscriber = ConfigSubscriber(
        s.control_plane,
        node_id=f"ext-proc-{s.ext_proc_port}",
        metadata=metadata,
        credentials=credentials,
        on_update=gauges.xds_updated,
    )
    subscriber.start()
    # INFERY_LOOP_WATCH_MS: log every event-loop stall longer than this, split into CPU, GC and
    # waiting for a CPU (ext_proc/loop_watch.py); 0: not watched.
    watch = LoopWatch(report_ms=s.loop_watch_ms) if s.loop_watch_ms > 0 else None
    if watch is not None:
        watch.start()
    reporter = UsageReporter(s.control_plane, spool, metadata=metadata, credentials=credentials)
    await reporter.start()
    state = open_state(s.redis_url)
    media = MediaPolicy(s.media_allowed_hosts, s.max_media_urls)
    limiter = Limiter(state)
    # Metrics off (port 0): nothing scrapes them, so nothing counts them either (make bench's
    # gateway_metrics_off row measures what counting costs).
    counting = bool(s.metrics_port)
    record = gauges.recorder(reporter.record) if counting else reporter.record
    # Request lines are INFO: a process logging warnings only writes none.
    requests = (
        request_log.RequestLog(sample=s.request_log_sample) if s.log_level in ("DEBUG", "INFO") else None
    )
    if requests is not None:
        record = requests.recorder(record)
    files = None
    if s.files_service:
        files = file_refs.FilesService.from_env(
            s.files_service, s.xds_tls_ca_file or "", s.xds_tls_cert_file or "", s.xds_tls_key_file or ""
        )
    responses = ResponseStore(s.control_plane, credentials, metadata)
    # OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_ENDPOINT...): unset, no tracer at all.
    tracer = tracing.configure()
    listener = Listener(s.listener_url.rstrip("/")) if s.listener_url else None
    services = Services(
        record,
        limiter,
        Idempotency(state),
        media,
        s.max_sse_event_bytes,
        files,
        max_upload_bytes=s.max_audio_bytes,
        max_buffered_bytes=s.max_request_bytes,
        upload_lookahead=s.audio_model_lookahead_bytes,
        responses=responses,
        tracer=tracer,
        listener=listener,
    )
    gauges.watch_limiter(limiter)
    gauges.watch_spool(reporter)
    gauges.watch_responses(responses)
    gauges.watch_config(lambda: subscriber.problem)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if s.metrics_port:
        metrics.serve(gauges, s.metrics_port, s.metrics_host)
    # Serve only with a whole configuration: until then Envoy finds no ext_proc here rather
    # than one answering 503 to everything (a restart that cannot load its configuration).
    while not await _first(subscriber.ready, stop, timeout=ready_timeout):
        log.error("no configuration from %s yet (%s); not serving", s.control_plane, subscriber.problem)
    ext_proc_methods = methods(
        lambda: subscriber.current,
        services,
        s.deadline(),
        answered=gauges.messages.answered if counting else None,
    )
    # Envoy's health checker asks on the same listeners: SERVING while a whole configuration is in
    # force and nothing has failed to arrive since (a replica with stale keys takes no traffic).
    # A control plane that is merely unreachable is no problem: the last configuration serves on.
    server = SERVERS[s.ext_proc_server]({**ext_proc_methods, **health.methods(subscriber.is_ready)})
    if not stop.is_set():
        where = []
        if s.ext_proc_uds:
            await server.start_unix(s.ext_proc_uds)
            where.append(f"unix:{s.ext_proc_uds}")
        if s.ext_proc_tcp:
            await server.start(s.ext_proc_host, s.ext_proc_port, token=(s.ext_proc_token or "").encode())
            where.append(f"{s.ext_proc_host}:{s.ext_proc_port}")
        print(f"ready ext_proc {' and '.join(where)} ({s.ext_proc_server} server)", flush=True)
    # What is loaded by now (modules, the configuration) lives as long as the process: a full
    # collection walked it in ~30 ms, a pause that a burst of configuration changes triggered.
    gc.freeze()
    await stop.wait()
    await server.stop(grace=5)
    await asyncio.gather(*services.background, return_exceptions=True)
    await services.idempotency.close()
    await state.close()
    await reporter.close()
    await subscriber.close()
    if requests is not None:
        requests.close()
    if tracer is not None:
        tracer.shutdown()


# Command-line flags and the settings they set (a flag wins over its variable).
_FLAGS = {
    "host": "ext_proc_host",
    "port": "ext_proc_port",
    "uds": "ext_proc_uds",
    "tcp": "ext_proc_tcp",
    "server": "ext_proc_server",
    "control_plane": "control_plane",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
    "log_level": "log_level",
}


def main(argv: list[str] | None = None) -> None:
    parser = ExtProcSettings.command_line(
        "python -m ext_proc",
        "One ext_proc process: Envoy's external processor for the gateway.",
        argument_default=argparse.SUPPRESS,  # a flag not given leaves its variable (or default) in force
    )
    parser.add_argument("--host", help="address of the TCP port (INFERY_EXT_PROC_HOST)")
    parser.add_argument(
        "--port", type=int, help="the TCP port, also this process's xDS node id (INFERY_EXT_PROC_PORT)"
    )
    parser.add_argument(
        "--uds",
        help="listen on this Unix socket (and not on TCP unless --tcp): Envoy beside us gets ~15%% more"
        " requests/s, and only processes that may open the socket's directory reach it (INFERY_EXT_PROC_UDS)",
    )
    parser.add_argument(
        "--tcp",
        action=argparse.BooleanOptionalAction,
        help="listen on --host:--port (default: only without --uds; INFERY_EXT_PROC_TCP)",
    )
    parser.add_argument(
        "--server",
        choices=sorted(SERVERS),
        help="the gRPC server: h2 (ext_proc's own, the default) or grpcio (grpc.aio, the switch-off;"
        " INFERY_EXT_PROC_SERVER)",
    )
    parser.add_argument(
        "--control-plane",
        help="gRPC address of the control plane: xDS and usage reports (INFERY_CONTROL_PLANE)",
    )
    parser.add_argument("--spool", default=None, help="usage spool file (default .infery/usage-<port>.db)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port; 0 = off (INFERY_METRICS_PORT)",
    )
    parser.add_argument("--metrics-host", help="address /metrics listens on (INFERY_METRICS_HOST)")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (INFERY_LOG_LEVEL)")
    args = vars(parser.parse_args(argv))
    try:
        settings = ExtProcSettings.from_env(overrides={_FLAGS[k]: v for k, v in args.items() if k in _FLAGS})
        require_shared_store(settings.ext_procs, settings.redis_url)
    except ValueError as exc:
        parser.error(str(exc))
    if settings.ext_proc_tcp is None:
        settings = settings.model_copy(update={"ext_proc_tcp": not settings.ext_proc_uds})
    if settings.ext_proc_tcp and not settings.ext_proc_token:
        parser.error(
            "listening on TCP needs INFERY_EXT_PROC_TOKEN (the token Envoy sends; anyone reaching the port"
            " could otherwise get provider keys), or use --uds"
        )
    spool = args["spool"]
    if spool is None:
        os.makedirs(".infery", exist_ok=True)
        spool = os.path.join(".infery", f"usage-{settings.ext_proc_port}.db")
    logs.configure(settings.log_level, settings.log_format)
    if malloc_tuning.keep_large_buffers():
        log.debug("malloc: large buffers kept for reuse (ext_proc/malloc_tuning.py)")
    if settings.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve(settings, spool, args["ready_timeout"]))


if __name__ == "__main__":
    main()
