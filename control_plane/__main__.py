"""Run the control plane: ``python -m control_plane``.

One process, one event loop, two servers: the admin API (FastAPI on uvicorn)
and the gRPC server that carries xDS to the data plane and usage reports back
from it. Settings come from the environment (control_plane/settings.py;
``--help`` lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn

from control_plane import tracing
from control_plane.api.app import create_app
from control_plane.config_file import GeneratedKey, apply_config
from control_plane.metrics import ControlPlaneMetrics
from control_plane.request_log import configure_logging
from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store, sweep_forever
from control_plane.settings import Settings
from control_plane.store.db import open_store
from control_plane.usage_service import add_usage_service
from control_plane.xds.auth import TokenInterceptor
from control_plane.xds.envoy_cache import EnvoyCache
from control_plane.xds.publisher import DELTA_TYPES, Publisher
from control_plane.xds.server import SERVER_OPTIONS, ads_handler

log = logging.getLogger("infery.control_plane")


def _keep_generated_keys(generated: list[GeneratedKey], config: Path, keys_file: str | None) -> None:
    """Keys a config file declared without a secret: shown once, through an owner-only file.

    Never printed: the process's output ends up in log files.
    """
    path = Path(keys_file or config.with_name(config.name + ".keys"))
    names = ", ".join(f"{key.workspace}/{key.name}" for key in generated)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            for key in generated:
                out.write(f"{key.workspace}/{key.name} {key.secret}\n")
    except OSError as exc:
        log.error(
            "new keys %s: cannot keep their secrets in %s (%s); revoke them and declare a `secret:`"
            " or create keys through the admin API",
            names,
            path,
            exc.strerror,
        )
        return
    log.warning("new keys %s: their secrets are in %s (mode 600)", names, path)


def _grpc_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port when a certificate is set; with a CA, client certificates are required."""
    if not (settings.xds_tls_cert_file and settings.xds_tls_key_file):
        return None
    ca = Path(settings.xds_tls_ca_file).read_bytes() if settings.xds_tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(settings.xds_tls_key_file).read_bytes(), Path(settings.xds_tls_cert_file).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops both servers on SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings) -> None:
    if settings.database_url.startswith("sqlite:///./"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _engine, sessions = await asyncio.to_thread(open_store, settings.database_url)  # migrates
    if settings.config:
        applied = await asyncio.to_thread(apply_config, settings.config, sessions)
        if applied.generated_keys:
            _keep_generated_keys(applied.generated_keys, Path(settings.config), settings.generated_keys_file)

    metrics = ControlPlaneMetrics()
    cache = EnvoyCache()
    publisher = Publisher(cache, sessions, settings.listener())
    publisher.publish = metrics.timed_publish(publisher.publish)  # type: ignore[method-assign]
    await publisher.start()

    token = settings.xds_token or ""
    if not token and not settings.xds_tls_ca_file and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "neither INFERY_XDS_TLS_CA_FILE (client certificates) nor INFERY_XDS_TOKEN is set:"
            " anyone reaching port %s can read provider keys",
            settings.xds_port,
        )
    grpc_server = grpc.aio.server(
        interceptors=[TokenInterceptor(token)] if token else [], options=SERVER_OPTIONS
    )
    grpc_server.add_generic_rpc_handlers((ads_handler(cache, publisher.delta, DELTA_TYPES),))
    add_usage_service(grpc_server, sessions, metrics)
    responses = ResponseStoreService(sessions, settings.responses_retention_days * DAY_S)
    add_response_store(grpc_server, responses)
    sweeper = asyncio.create_task(sweep_forever(responses))
    address = f"{settings.host}:{settings.xds_port}"
    credentials = _grpc_server_credentials(settings)
    if credentials is None:
        grpc_server.add_insecure_port(address)
    else:
        grpc_server.add_secure_port(address, credentials)
    await grpc_server.start()

    app = create_app(settings, sessions, metrics)
    traced = tracing.instrument(app)  # OTEL_EXPORTER_OTLP_ENDPOINT: the admin API's spans
    api = _ApiServer(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.admin_port,
            log_level="warning",
            lifespan="on",
            # uvicorn's loggers go through ours (safe exceptions): it logs the exceptions of failed
            # requests. Its access log is off: control_plane/request_log.py logs each request.
            log_config=None,
            access_log=False,
        )
    )
    api_task = asyncio.create_task(api.serve())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "control plane: admin http://%s:%s, xDS %s:%s (%s)",
        settings.host,
        settings.admin_port,
        settings.host,
        settings.xds_port,
        "plain gRPC" if credentials is None else "TLS" if not settings.xds_tls_ca_file else "mutual TLS",
    )
    await stop.wait()
    api.should_exit = True
    await api_task
    sweeper.cancel()
    await publisher.close()
    await grpc_server.stop(grace=2)
    if traced is not None:
        traced.shutdown()  # export what is queued


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_command_line(
        "python -m control_plane", "The control plane: admin API, dashboard, xDS and usage ingestion.", argv
    )
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
