"""``GET /v1/models`` and ``GET /v1/models/{id}``, answered from the configuration.

A key sees exactly the models its workspace may use; ``owned_by`` names the
provider that serves each one, and ``endpoints`` (an extra field, which SDKs
ignore) the paths the model serves: those whose endpoint has a translator for
the provider's wire format, or that the gateway answers itself for it
(count_tokens' estimate), so a user sees what works before calling.

Answered from the headers (``RequestBody.HEADERS_ONLY``) and not metered: no usage record.
"""

from __future__ import annotations

import functools
from urllib.parse import unquote

import orjson

from ext_proc import translators
from ext_proc.config import ApiKey, GatewayConfig, Model
from ext_proc.errors import envelope

from .base import Answer, HeadersOnly, HeadersReply, HeadersRequest

PATH = "/v1/models"


class Models(HeadersOnly):
    __slots__ = ()

    name = "models"
    paths = (PATH, PATH + "/")

    def on_headers(self, request: HeadersRequest) -> HeadersReply:
        return Answer(*models(request.path, request.key, request.config))


ENDPOINT = Models()


@functools.cache
def served_paths(wire_format: str, kind: str = "") -> tuple[str, ...]:
    """The paths a model of a provider speaking ``wire_format`` (of ``kind``) serves, in the
    registry's order."""
    from ext_proc import endpoints  # the registry, which holds this module's endpoint too

    return tuple(
        path
        for endpoint in endpoints.SERVED.endpoints
        if translators.has_pair(endpoint.name, wire_format, kind) or wire_format in endpoint.local_for
        for path in endpoint.paths
        if not path.endswith("/")  # a prefix names no one path
    )


def _entry(model: Model) -> dict[str, object]:
    return {
        "id": model.slug,
        "object": "model",
        "created": model.created,
        "owned_by": model.provider.name,
        "endpoints": served_paths(model.provider.wire_format, model.provider.kind),
    }


def models(path: str, key: ApiKey, config: GatewayConfig) -> tuple[int, bytes]:
    """(status, body) of ``GET /v1/models`` or ``GET /v1/models/{id}`` for ``key``'s workspace."""
    workspace = key.workspace
    if path == PATH:
        data = [_entry(m) for slug, m in sorted(config.models.items()) if workspace.allows(slug)]
        return 200, orjson.dumps({"object": "list", "data": data})
    slug = unquote(path[len(PATH) + 1 :])
    model = config.models.get(slug)
    if model is None or not workspace.allows(slug):
        return 404, envelope(404, "model_not_found", f"The model '{slug}' does not exist.", "model")
    return 200, orjson.dumps(_entry(model))
