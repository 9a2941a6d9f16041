"""The admin API application."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from control_plane import dashboard
from control_plane.api import errors, models, providers, routes, usage, workspaces
from control_plane.api.auth import AdminAuth, ensure_admin_token
from control_plane.schemas import Health
from control_plane.settings import Settings
from control_plane.store.changes import current_revision
from control_plane.store.db import SessionFactory


def create_app(settings: Settings, session_factory: SessionFactory) -> FastAPI:
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

    admin = APIRouter(prefix="/admin/v1", dependencies=[Depends(AdminAuth(settings, session_factory))])
    for module in (providers, models, routes, workspaces, usage):
        admin.include_router(module.router(session_factory))
    app.include_router(admin)
    dashboard.install(app)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        with session_factory() as session:
            return Health(status="ok", revision=current_revision(session))

    return app
