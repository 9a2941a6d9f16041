"""The admin API application."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from control_plane import dashboard
from control_plane.api import batches, errors, models, providers, routes, usage, workspaces
from control_plane.api.auth import AdminAuth, ensure_admin_token
from control_plane.metrics import ControlPlaneMetrics
from control_plane.request_log import RequestLog
from control_plane.schemas import Health
from control_plane.settings import Settings
from control_plane.store.changes import current_revision
from control_plane.store.db import SessionFactory, alembic_config


def create_app(
    settings: Settings, session_factory: SessionFactory, metrics: ControlPlaneMetrics | None = None
) -> FastAPI:
    """Build the admin API over an already migrated database.

    Generates the admin token (written to its owner-only file) when there is neither INFERY_ADMIN_TOKEN
    nor a stored one, so call it after `control_plane.store.db.migrate`.
    """
    ensure_admin_token(settings, session_factory)
    app = FastAPI(
        title="Infery Gateway admin API",
        version="1",
        description="Providers, models, fallback routes, workspaces, members, keys and usage. "
        "Authenticate with `Authorization: Bearer <admin token>`. Decimals are JSON strings.",
    )
    errors.install(app)
    (metrics or ControlPlaneMetrics()).install(app)
    app.add_middleware(RequestLog)  # outermost: it times and logs everything below

    admin = APIRouter(prefix="/admin/v1", dependencies=[Depends(AdminAuth(settings, session_factory))])
    for module in (providers, models, routes, workspaces, usage, batches):
        admin.include_router(module.router(session_factory))
    app.include_router(admin)
    dashboard.install(app)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        with session_factory() as session:
            return Health(status="ok", revision=current_revision(session))

    expected_heads = set(ScriptDirectory.from_config(alembic_config(settings.database_url)).get_heads())

    @app.get(
        "/readyz", tags=["health"], responses={503: {"description": "store unreachable or not migrated"}}
    )
    def readyz() -> JSONResponse:
        """Ready to serve: the store answers and its schema is at the migrations' head."""
        try:
            with session_factory() as session:
                current = set(MigrationContext.configure(session.connection()).get_current_heads())
                revision = current_revision(session)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": f"store: {type(exc).__name__}"}, 503)
        if current != expected_heads:
            return JSONResponse({"status": "unavailable", "reason": "migrations not current"}, 503)
        return JSONResponse({"status": "ok", "revision": revision})

    return app
