"""Run the files service: ``python -m control_plane.files`` (console script ``infery-files``).

Settings come from the environment (control_plane/files/settings.py; ``--help`` lists them).
With a certificate and a CA (``INFERY_FILES_TLS_*``, by default the control plane's
``INFERY_XDS_TLS_*``) it serves HTTPS and requires a client certificate signed by that CA: Envoy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from control_plane.files.app import FilesService, create_app
from control_plane.files.settings import FilesSettings
from control_plane.files.storage import FileStorage
from control_plane.files.sweeper import sweep_forever
from control_plane.request_log import configure_logging
from control_plane.store.db import open_store
from control_plane.xds.data_plane_secret import files_identity_key

log = logging.getLogger("infery.files")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build(settings: FilesSettings) -> FilesService:
    """Migrate the store (a no-op once the control plane has), read the key, open the storage."""
    _engine, sessions = open_store(settings.database_url)
    with sessions() as session:
        key = files_identity_key(session)
    return FilesService(settings, sessions, FileStorage(settings.storage_url), key)


def app_with_sweeper(service: FilesService) -> FastAPI:
    app = create_app(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_forever(service))
        try:
            yield
        finally:
            sweeper.cancel()

    app.router.lifespan_context = lifespan
    return app


def uvicorn_config(app: FastAPI, settings: FilesSettings) -> uvicorn.Config:
    tls: dict[str, object] = {}
    if settings.tls_cert_file:
        tls = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
        if settings.tls_ca_file:
            tls |= {"ssl_ca_certs": settings.tls_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    elif settings.files_host not in _LOOPBACK:
        log.warning(
            "the files service listens on %s without TLS (no INFERY_FILES_TLS_* / INFERY_XDS_TLS_*):"
            " only the signed identity header protects it",
            settings.files_host,
        )
    return uvicorn.Config(
        app,
        host=settings.files_host,
        port=settings.files_port,
        log_level="warning",
        lifespan="on",
        log_config=None,
        # Envoy keeps connections open between requests.
        timeout_keep_alive=60,
        **tls,  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> None:
    settings = FilesSettings.from_command_line(
        "python -m control_plane.files", "The files service: /v1/files stored by the gateway.", argv
    )
    configure_logging(settings.log_level, settings.log_format)
    service = build(settings)
    if settings.files_metrics_port:
        service.metrics.serve(settings.files_metrics_port, settings.files_metrics_host)
    mode = "mutual TLS" if settings.tls_ca_file else "TLS" if settings.tls_cert_file else "plain HTTP"
    log.info(
        "files service: %s:%s (%s), storage %s, at most %s bytes a file",
        settings.files_host,
        settings.files_port,
        mode,
        settings.storage_url.split("://", 1)[0],
        settings.max_file_bytes,
    )
    uvicorn.Server(uvicorn_config(app_with_sweeper(service), settings)).run()


if __name__ == "__main__":
    main()
