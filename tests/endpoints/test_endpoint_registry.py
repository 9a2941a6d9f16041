"""Every served path has its endpoint, found by one dict lookup; paths under a prefix are found too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from infery_proto import wire

from ext_proc import endpoints, exchange, metrics
from ext_proc.endpoints import Registry
from ext_proc.endpoints.base import Endpoint, RequestBody
from ext_proc.metering import input_tokens_cost

SERVED = {
    "/v1/chat/completions": "chat_completions",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "images",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/moderations": "moderations",
    "/v1/completions": "completions",
    "/v1/audio/speech": "audio_speech",
    "/v1/audio/transcriptions": "audio_transcriptions",
    "/v1/audio/translations": "audio_translations",
    "/v1/responses": "responses",
    "/v1/responses/": "stored_responses",  # /v1/responses/{id} and {id}/input_items
    "/v1/models": "models",
    "/v1/models/": "models",  # /v1/models/{id}
    "/v1/files": "files",
    "/v1/files/": "files",  # /v1/files/{id} and {id}/content
    "/v1/batches": "batches",  # the Batch API, served by the files service too
    "/v1/batches/": "batches",  # /v1/batches/{id} and {id}/cancel
}


@pytest.mark.parametrize(("path", "name"), SERVED.items())
def test_every_served_path_has_its_endpoint(path: str, name: str) -> None:
    endpoint = endpoints.by_path(path)
    assert endpoint is not None and endpoint.name == name and path in endpoint.paths
    assert endpoint is endpoints.by_path(path)  # one instance serves every request
    assert metrics.OPERATIONS[path] == endpoint.operation


def test_the_streamed_bodies_are_the_paths_envoy_streams() -> None:
    """Envoy's route streams these paths' bodies (wire.STREAMED_BODY_PATHS, control_plane's side);
    ext_proc's endpoints read exactly these as streams."""
    streamed = {
        p for e in endpoints.SERVED.endpoints if e.request_body is RequestBody.STREAMED for p in e.paths
    }
    assert streamed == set(wire.STREAMED_BODY_PATHS)


@pytest.mark.parametrize("path", ["/v1/responses/resp_1", "/v1/responses/resp_1/input_items"])
def test_a_kept_responses_path_has_its_endpoint(path: str) -> None:
    endpoint = endpoints.by_path(path)
    assert endpoint is not None and endpoint.name == "stored_responses"


def test_the_exchange_has_no_path_of_its_own() -> None:
    """Every path is found through the registry: exchange.py names none (issue 13)."""
    source = Path(exchange.__file__).read_text()
    assert not re.search(r'"/v1/', source), "a path test in exchange.py: make it an endpoint's"


def test_the_served_endpoints_are_exactly_these() -> None:
    served = {path: e.name for e in endpoints.SERVED.endpoints for path in e.paths}
    assert served == SERVED
    assert len({e.name for e in endpoints.SERVED.endpoints}) == len(endpoints.SERVED.endpoints)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/modelsx",
        "/v1/chat/completions/",
        "/v1/chat",
        "/v1/embeddings/x",
        "/",
        "",
        "/v1/responsesx",
        "/v1/messages/",
    ],
)
def test_unknown_paths_have_none(path: str) -> None:
    assert endpoints.by_path(path) is None


class _Stored(Endpoint):
    """An endpoint of paths under a prefix, as the files API is; defined here, not served."""

    __slots__ = ()

    name = "stored"
    paths = ("/v1/stored", "/v1/stored/")
    methods = frozenset({"GET", "POST", "DELETE"})
    operation = "other"
    meters = (input_tokens_cost,)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0


def test_a_prefix_serves_every_path_under_it() -> None:
    stored = _Stored()
    registry = Registry((*endpoints.SERVED.endpoints, stored))
    for path in ("/v1/stored", "/v1/stored/file-1", "/v1/stored/file-1/content"):
        assert registry.by_path(path) is stored, path
    for path in ("/v1/storedx", "/v1/storedx/1", "/v1/other/stored/1", "/v1"):
        assert registry.by_path(path) is None, path
    assert registry.by_path("/v1/embeddings") is endpoints.by_path("/v1/embeddings")


def test_a_path_served_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="/v1/embeddings is served by both embeddings and embeddings"):
        Registry((*endpoints.SERVED.endpoints, endpoints.by_path("/v1/embeddings")))  # type: ignore[arg-type]
