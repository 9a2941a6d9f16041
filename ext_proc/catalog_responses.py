"""``GET /v1/models`` and ``GET /v1/models/{id}``, answered from the configuration.

A key sees exactly the models its workspace may use; ``owned_by`` names the
provider that serves each one.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson

from ext_proc.config import ApiKey, GatewayConfig, Model
from ext_proc.errors import envelope


def _entry(model: Model) -> dict[str, object]:
    return {"id": model.slug, "object": "model", "created": model.created, "owned_by": model.provider.name}


def models(path: str, key: ApiKey, config: GatewayConfig) -> tuple[int, bytes]:
    workspace = key.workspace
    if path == "/v1/models":
        data = [_entry(m) for slug, m in sorted(config.models.items()) if workspace.allows(slug)]
        return 200, orjson.dumps({"object": "list", "data": data})
    slug = unquote(path[len("/v1/models/") :])
    model = config.models.get(slug)
    if model is None or not workspace.allows(slug):
        return 404, envelope(404, "model_not_found", f"The model '{slug}' does not exist.", "model")
    return 200, orjson.dumps(_entry(model))
