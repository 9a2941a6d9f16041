"""/admin/v1/providers"""

from __future__ import annotations

from fastapi import APIRouter, Response

from control_plane.resources import models, providers
from control_plane.schemas import ModelOut, ProviderIn, ProviderOut, ProviderUpdate
from control_plane.store.changes import mutation
from control_plane.store.db import SessionFactory


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/providers", tags=["providers"])

    @api.get("", response_model=dict[str, list[ProviderOut]])
    def list_providers() -> dict[str, list[ProviderOut]]:
        with session_factory() as session:
            return {"data": [providers.to_out(row) for row in providers.list_all(session)]}

    @api.post("", status_code=201, response_model=ProviderOut)
    def create_provider(body: ProviderIn) -> ProviderOut:
        with mutation(session_factory) as session:
            row = providers.create(session, body)
        return providers.to_out(row)

    @api.get("/{name}", response_model=ProviderOut)
    def get_provider(name: str) -> ProviderOut:
        with session_factory() as session:
            return providers.to_out(providers.get(session, name))

    @api.put("/{name}", response_model=ProviderOut)
    def update_provider(name: str, body: ProviderUpdate) -> ProviderOut:
        with mutation(session_factory) as session:
            row = providers.update(session, name, body)
        return providers.to_out(row)

    @api.delete("/{name}", status_code=204)
    def delete_provider(name: str) -> Response:
        with mutation(session_factory) as session:
            providers.delete(session, name)
        return Response(status_code=204)

    @api.post("/{name}/import-catalog", response_model=dict[str, list[ModelOut]])
    def import_catalog(name: str) -> dict[str, list[ModelOut]]:
        """Create every catalog model of this provider's kind; models that exist are left alone."""
        with mutation(session_factory) as session:
            created = models.import_catalog(session, name)
        return {"data": [models.to_out(row) for row in created]}

    return api
