"""The files endpoint (ext_proc/endpoints/files.py) through the real exchange: headers only, a signed
identity, and the body left to Envoy."""

from __future__ import annotations

import hashlib

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto import identity_assertion
from infery_proto.v1 import config_pb2, usage_pb2
from infery_proto.wire import FILES_CLUSTER, FILES_PATH_PREFIX

from ext_proc import config, endpoints
from ext_proc.endpoints import files
from ext_proc.endpoints.base import RequestBody
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency
from ext_proc.lifecycle import FINISHED
from ext_proc.limits import Limiter
from ext_proc.shared_state import MemoryState

KEY = "inf_files-test"
FILES_KEY = b"i" * 32
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _config(files_key: bytes = FILES_KEY) -> config.GatewayConfig:
    return config.build(
        [],
        [],
        [config_pb2.Workspace(id="ws-a", name="a", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="key-a",
                key_hash=hashlib.sha256(KEY.encode()).hexdigest(),
                workspace_id="ws-a",
                member_id="member-a",
            )
        ],
        [],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32, files_identity_key=files_key)],
    )


def _exchange(records: list[usage_pb2.UsageRecord], cfg: config.GatewayConfig | None = None) -> Exchange:
    state = MemoryState(prefix="files")
    return Exchange(cfg or _config(), Services(records.append, Limiter(state), Idempotency(state)))


def _headers(pairs: list[tuple[str, str]], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
        ),
        end_of_stream=end,
    )


def _set(reply: ep.ProcessingResponse) -> dict[str, str]:
    mutation = reply.request_headers.response.header_mutation
    assert all(h.append_action == _OVERWRITE for h in mutation.set_headers)
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def test_the_files_paths_are_its_own_and_headers_only():
    for path in ("/v1/files", "/v1/files/file-1", "/v1/files/file-1/content"):
        assert endpoints.by_path(path) is files.ENDPOINT
    for path in ("/v1/filesystem", "/v1/file", "/v2/files", "/v1/filesx/1"):
        assert endpoints.by_path(path) is None
    assert files.ENDPOINT.request_body is RequestBody.HEADERS_ONLY
    # Envoy's files route (control_plane/xds/envoy_config.py) sends these paths with no body to ext_proc.
    assert files.ENDPOINT.paths == (FILES_PATH_PREFIX, FILES_PATH_PREFIX + "/")
    # The Batch API: the same files service, the same way (control_plane/batches/).
    for path in ("/v1/batches", "/v1/batches/batch_1", "/v1/batches/batch_1/cancel"):
        assert endpoints.by_path(path) is files.BATCHES
    assert endpoints.by_path("/v1/batchesx") is None
    assert files.BATCHES.request_body is RequestBody.HEADERS_ONLY


def test_an_authenticated_request_goes_to_the_files_service_with_a_signed_identity():
    records: list[usage_pb2.UsageRecord] = []
    exchange = _exchange(records)
    path = "/v1/files?purpose=batch&limit=2"
    reply = exchange.on_request_headers(
        _headers(
            [
                (":path", path),
                (":method", "GET"),
                ("authorization", f"Bearer {KEY}"),
                # A client's attempt to choose the workspace, and the route: overwritten, removed.
                (identity_assertion.HEADER, "files-v1.9999999999.r.ws-b.member-b.key-b.forged"),
                ("x-infery-cluster", "somewhere-else"),
            ],
            end=True,
        )
    )
    assert reply.WhichOneof("response") == "request_headers"
    common = reply.request_headers.response
    assert common.clear_route_cache
    set_headers = _set(reply)
    assert set_headers["x-infery-cluster"] == FILES_CLUSTER
    assert set_headers["x-request-id"] == exchange.request_id
    who = identity_assertion.verify(FILES_KEY, set_headers[identity_assertion.HEADER], "GET", path)
    assert who == identity_assertion.Identity(exchange.request_id, "ws-a", "member-a", "key-a")
    assert "authorization" in common.header_mutation.remove_headers
    # Nothing more of this request reaches ext_proc: no body, no response.
    mode = reply.mode_override
    assert mode.request_body_mode == ProcessingMode.NONE
    assert mode.response_header_mode == ProcessingMode.SKIP
    assert mode.response_body_mode == ProcessingMode.NONE
    assert mode.request_trailer_mode == mode.response_trailer_mode == ProcessingMode.SKIP
    assert exchange.state is FINISHED
    exchange.abort()  # the stream ends: ext_proc records no usage (the files service does)
    assert records == []


def test_another_method_is_a_405_before_anything_is_forwarded():
    reply = _exchange([]).on_request_headers(
        _headers([(":path", "/v1/files/file-1"), (":method", "PUT"), ("authorization", f"Bearer {KEY}")])
    )
    assert reply.immediate_response.status.code == 405
    assert b'"method_not_allowed"' in reply.immediate_response.body


def test_a_missing_or_unknown_key_is_answered_by_ext_proc():
    for authorization in ([], [("authorization", "Bearer inf_unknown")]):
        reply = _exchange([]).on_request_headers(
            _headers([(":path", "/v1/files"), (":method", "POST"), *authorization])
        )
        assert reply.WhichOneof("response") == "immediate_response"
        assert reply.immediate_response.status.code == 401
        assert b'"invalid_api_key"' in reply.immediate_response.body


def test_without_the_files_key_nothing_is_forwarded():
    reply = _exchange([], _config(files_key=b"")).on_request_headers(
        _headers([(":path", "/v1/files"), (":method", "GET"), ("authorization", f"Bearer {KEY}")])
    )
    assert reply.immediate_response.status.code == 503


def test_a_key_in_x_api_key_is_accepted_and_never_forwarded():
    """Attack: the inf_ key sent Anthropic's way (x-api-key) does not reach the files service either."""
    exchange = _exchange([])
    reply = exchange.on_request_headers(
        _headers([(":path", "/v1/files"), (":method", "GET"), ("x-api-key", KEY)], end=True)
    )
    assert reply.WhichOneof("response") == "request_headers"
    removed = reply.request_headers.response.header_mutation.remove_headers
    assert "x-api-key" in removed and "authorization" in removed
    assert KEY not in "".join(_set(reply).values())
