"""Run one ext_proc process: ``python -m ext_proc --port 50051 --control-plane 127.0.0.1:18000``.

Several processes on consecutive ports (or one Unix socket each, ``--uds``) share
the load: Envoy lists each as an endpoint of its ext_proc cluster (one process per
address; SO_REUSEPORT does not spread Envoy's long-lived HTTP/2 connections).

ext_proc puts provider keys on requests, so whoever reaches it can have them: with
``--uds`` it listens on that socket only (its directory's permissions guard it) unless
``--tcp`` asks for the port too; on TCP every stream must carry the token in
INFERY_EXT_PROC_TOKEN (Envoy sends it from its bootstrap), and ext_proc refuses to
listen on TCP without one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal

from ext_proc import health, metrics, request_log
from ext_proc.control_plane_channel import credentials_from_env
from ext_proc.deadline import MessageDeadline
from ext_proc.exchange import Services
from ext_proc.h2_grpc import Server
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.media_fetch import DEFAULT_MAX_URLS, MediaPolicy
from ext_proc.server import PROCESS, methods
from ext_proc.shared_state import open_state, require_shared_store
from ext_proc.translators.sse import DEFAULT_MAX_EVENT_BYTES
from ext_proc.usage_spool import UsageReporter
from ext_proc.xds_client import ConfigSubscriber

log = logging.getLogger("infery.ext_proc")


async def _first(ready: asyncio.Event, stop: asyncio.Event, timeout: float) -> bool:
    """Wait until `ready` or `stop` is set (True), or `timeout` passes (False)."""
    waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())]
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return bool(done)


async def serve(args: argparse.Namespace) -> None:
    token = os.environ.get("INFERY_XDS_TOKEN", "")
    metadata = (("authorization", "Bearer " + token),) if token else ()
    credentials = credentials_from_env()
    gauges = metrics.GatewayMetrics(workspace_label=metrics.workspace_label_enabled())
    subscriber = ConfigSubscriber(
        args.control_plane,
        node_id=f"ext-proc-{args.port}",
        metadata=metadata,
        credentials=credentials,
        on_update=gauges.xds_updated,
    )
    subscriber.start()
    reporter = UsageReporter(args.control_plane, args.spool, metadata=metadata, credentials=credentials)
    await reporter.start()
    state = open_state(args.redis_url)
    media = MediaPolicy(
        frozenset(h.strip() for h in args.media_allowed_hosts.split(",") if h.strip()), args.max_media_urls
    )
    limiter = Limiter(state)
    record = request_log.recorder(gauges.recorder(reporter.record), args.request_log_sample)
    services = Services(record, limiter, Idempotency(state), media, args.max_sse_event_bytes)
    gauges.watch_limiter(limiter)
    gauges.watch_spool(reporter)
    gauges.watch_config(lambda: subscriber.problem)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.metrics_port:
        metrics.serve(gauges, args.metrics_port, args.metrics_host)
    # Serve only with a whole configuration: until then Envoy finds no ext_proc here rather
    # than one answering 503 to everything (a restart that cannot load its configuration).
    while not await _first(subscriber.ready, stop, timeout=args.ready_timeout):
        log.error("no configuration from %s yet (%s); not serving", args.control_plane, subscriber.problem)
    ext_proc_methods = methods(lambda: subscriber.current, services, MessageDeadline.from_env())
    process = ext_proc_methods[PROCESS]
    ext_proc_methods[PROCESS] = dataclasses.replace(process, handler=gauges.timed_stream(process.handler))
    # Envoy's health checker asks on the same listeners: SERVING while a whole configuration is in
    # force and nothing has failed to arrive since (a replica with stale keys takes no traffic).
    # A control plane that is merely unreachable is no problem: the last configuration serves on.
    server = Server({**ext_proc_methods, **health.methods(subscriber.is_ready)})
    if not stop.is_set():
        where = []
        if args.uds:
            await server.start_unix(args.uds)
            where.append(f"unix:{args.uds}")
        if args.tcp:
            await server.start(args.host, args.port, token=args.tcp_token.encode())
            where.append(f"{args.host}:{args.port}")
        print(f"ready ext_proc {' and '.join(where)}", flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ext_proc")
    parser.add_argument("--host", default=os.environ.get("INFERY_EXT_PROC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("INFERY_EXT_PROC_PORT", "50051")))
    parser.add_argument(
        "--uds",
        default=os.environ.get("INFERY_EXT_PROC_UDS") or None,
        help="listen on this Unix socket (and not on TCP unless --tcp): Envoy beside us gets ~15%% more"
        " requests/s, and only processes that may open the socket's directory reach it",
    )
    parser.add_argument(
        "--tcp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="listen on --host:--port (default: only without --uds; INFERY_EXT_PROC_TCP=1 also asks)",
    )
    parser.add_argument(
        "--control-plane",
        default=os.environ.get("INFERY_CONTROL_PLANE", "127.0.0.1:18000"),
        help="gRPC address of the control plane (xDS and usage reports)",
    )
    parser.add_argument("--spool", default=None, help="usage spool file (default .infery/usage-<port>.db)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("INFERY_REDIS_URL") or None,
        help="shared limits and idempotency across replicas (default: in-process)",
    )
    parser.add_argument(
        "--media-allowed-hosts",
        default=os.environ.get("INFERY_MEDIA_ALLOWED_HOSTS", ""),
        help="comma-separated host:port that may serve image/PDF URLs from private addresses",
    )
    parser.add_argument(
        "--max-sse-event-bytes",
        type=int,
        default=int(os.environ.get("INFERY_MAX_SSE_EVENT_BYTES", str(DEFAULT_MAX_EVENT_BYTES))),
        help="the largest provider stream event read; a longer one cuts the stream with upstream_error",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("INFERY_METRICS_PORT", "9464")),
        help="serve Prometheus /metrics on this port (one port per ext_proc process; 0 = off)",
    )
    parser.add_argument(
        "--metrics-host",
        default=os.environ.get("INFERY_METRICS_HOST", "0.0.0.0"),
        help="address /metrics listens on (nothing secret in it: counts, models, providers)",
    )
    parser.add_argument(
        "--max-media-urls",
        type=int,
        default=int(os.environ.get("INFERY_MAX_MEDIA_URLS") or DEFAULT_MAX_URLS),
        help="image/file URLs the gateway fetches for one request, at most (more: 400)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("INFERY_EXT_PROCS", "1") or 1),
        help="how many ext_proc processes serve this gateway; more than one needs --redis-url",
    )
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default=os.environ.get("INFERY_LOG_LEVEL", "INFO"))
    args = parser.parse_args()
    if args.tcp is None:
        args.tcp = not args.uds or os.environ.get("INFERY_EXT_PROC_TCP", "") in ("1", "true", "yes")
    args.tcp_token = os.environ.get("INFERY_EXT_PROC_TOKEN", "").strip()
    if args.tcp and not args.tcp_token:
        parser.error(
            "listening on TCP needs INFERY_EXT_PROC_TOKEN (the token Envoy sends; anyone reaching the port"
            " could otherwise get provider keys), or use --uds"
        )
    if args.max_sse_event_bytes < 1024:
        parser.error("INFERY_MAX_SSE_EVENT_BYTES must be at least 1024")
    try:
        require_shared_store(args.processes, args.redis_url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.spool is None:
        os.makedirs(".infery", exist_ok=True)
        args.spool = os.path.join(".infery", f"usage-{args.port}.db")
    try:
        args.request_log_sample = request_log.sample_rate()
    except ValueError as exc:
        parser.error(str(exc))
    request_log.configure_logging(args.log_level)
    if os.environ.get("INFERY_UVLOOP", "1") != "0":
        import uvloop

        uvloop.install()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
