"""infery_proto.wire is the one copy of the names and error codes ext_proc, the control plane and
Envoy's configuration share: every side uses it, and nothing keeps a copy of its own."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.protobuf import json_format, struct_pb2, text_format
from infery_proto import wire
from infery_proto.v1 import config_pb2
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from control_plane import errors as cp_errors
from control_plane.api import errors as cp_api_errors
from control_plane.xds import envoy_config
from ext_proc import attempt
from ext_proc import config as ext_proc_config
from ext_proc.errors import GatewayError, envelope, upstream_status

REPO = Path(__file__).resolve().parent.parent
WIRE = REPO / "proto" / "infery_proto" / "wire.py"
_CODE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")  # snake_case
# The usage record's code for a stream that ended before its response did (the client left, or
# Envoy reset it): no response carries it, so it has no status or type to agree on.
RECORDED_ONLY = {"stream_interrupted"}

# SPEC.md's error table (the contract): status and code.
SPEC_CODES = {
    "invalid_json": 400,
    "invalid_request": 400,
    "unsupported_parameter": 400,
    "unsupported_endpoint": 400,
    "invalid_api_key": 401,
    "model_not_allowed": 403,
    "model_not_found": 404,
    "not_found": 404,
    "idempotency_key_in_use": 409,
    "idempotency_key_reused": 422,
    "request_too_large": 413,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "upstream_error": 502,
    "upstream_unavailable": 503,
    "upstream_timeout": 504,
}


# -- the table ------------------------------------------------------------------------------


def test_the_table_holds_every_code_of_the_spec_at_its_status():
    assert {code: wire.ERRORS[code].status for code in SPEC_CODES} == SPEC_CODES


def test_the_types_are_openais():
    """The decision in wire's docstring: OpenAI's own types, Anthropic's names nowhere."""
    assert {kind.type for kind in wire.ERRORS.values() if kind.status >= 500} == {"server_error"}
    assert wire.ERRORS["rate_limit_exceeded"] == (429, "requests")
    assert wire.ERRORS["insufficient_quota"] == (429, "insufficient_quota")
    others = {kind.type for code, kind in wire.ERRORS.items() if kind.status < 500 and kind.status != 429}
    assert others == {"invalid_request_error"}
    # The codes the three copies disagreed on.
    assert wire.ERRORS["not_found"] == (404, "invalid_request_error")
    assert wire.ERRORS["invalid_admin_token"] == (401, "invalid_request_error")
    assert wire.ERRORS["request_too_large"] == (413, "invalid_request_error")


def test_every_code_is_snake_case_and_openais_request_codes_are_400s():
    assert all(_CODE.fullmatch(code) for code in wire.ERRORS)
    assert {code: wire.ERRORS[code].status for code in wire.OPENAI_REQUEST_CODES} == dict.fromkeys(
        wire.OPENAI_REQUEST_CODES, 400
    )


def test_a_code_outside_the_table_is_typed_by_its_status():
    assert wire.error_type("something_new", 503) == "server_error"
    assert wire.error_type("something_new", 418) == "invalid_request_error"
    # A table code keeps its type whatever status a caller answers it with (the admin API's 422).
    assert wire.error_type("invalid_request", 422) == "invalid_request_error"
    assert wire.error_type("rate_limit_exceeded", 503) == "requests"


def test_the_envelope_shape():
    assert wire.error_object(404, "model_not_found", "No such model.", "model") == {
        "error": {
            "type": "invalid_request_error",
            "code": "model_not_found",
            "message": "No such model.",
            "param": "model",
        }
    }


# -- ext_proc -----------------------------------------------------------------------------


def _status_code_pairs(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(status, code, line) wherever a literal HTTP status is followed by a literal code among a
    call's arguments or a tuple's items: GatewayError(404, "not_found", ...), ClientError(...),
    failed(...), _error(out, 502, "upstream_error", ...), (429, "rate_limit_exceeded", False)."""
    found = []
    for node in ast.walk(tree):
        items: list[ast.expr] = []
        if isinstance(node, ast.Call):
            items = list(node.args)
        elif isinstance(node, ast.Tuple):
            items = list(node.elts)
        for first, second in itertools.pairwise(items):
            if (
                isinstance(first, ast.Constant)
                and type(first.value) is int
                and 100 <= first.value <= 599
                and isinstance(second, ast.Constant)
                and isinstance(second.value, str)
                and _CODE.fullmatch(second.value)
            ):
                found.append((first.value, second.value, node.lineno))
    return found


def _assigned_codes(tree: ast.AST) -> list[tuple[str, int]]:
    """Literal codes assigned to a name or attribute called ``code`` or ``error_code`` (not the empty
    "no error yet")."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            names = [t.id if isinstance(t, ast.Name) else getattr(t, "attr", "") for t in node.targets]
            value = node.value.value
            if any(name in ("code", "error_code") for name in names) and isinstance(value, str) and value:
                found.append((value, node.lineno))
    return found


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_every_code_ext_proc_raises_is_in_the_table_at_its_status():
    pairs: list[tuple[int, str, str]] = []
    assigned: list[tuple[str, str]] = []
    for path in _python_files("ext_proc"):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(REPO).as_posix()
        pairs += [(status, code, f"{where}:{line}") for status, code, line in _status_code_pairs(tree)]
        assigned += [(code, f"{where}:{line}") for code, line in _assigned_codes(tree)]
    # The scan sees the gateway's own errors, the translators' outcomes and the limiter's 429s.
    seen = {code for _, code, _ in pairs}
    assert {"not_found", "invalid_api_key", "rate_limit_exceeded", "insufficient_quota"} <= seen
    assert {"model_not_found", "upstream_timeout", "idempotency_key_reused", "invalid_type"} <= seen
    wrong = [(s, c, w) for s, c, w in pairs if c not in wire.ERRORS or wire.ERRORS[c].status != s]
    assert wrong == []
    unknown = [(c, w) for c, w in assigned if c not in wire.ERRORS and c not in RECORDED_ONLY]
    assert assigned and unknown == []


@pytest.mark.parametrize("provider_status", [*range(400, 432), *range(500, 530)])
def test_a_provider_status_becomes_a_table_code(provider_status):
    status, code = upstream_status(provider_status)
    assert code in wire.ERRORS
    # A provider's unusual 4xx keeps its status (the documented exception); all else is the table's.
    assert status == wire.ERRORS[code].status or (code == "invalid_request" and status == provider_status)


@pytest.mark.parametrize("code", sorted(wire.ERRORS))
def test_ext_procs_envelope_uses_the_table(code):
    kind = wire.ERRORS[code]
    body = orjson.loads(GatewayError(kind.status, code, "m", "p").body())
    assert body == {"error": {"type": kind.type, "code": code, "message": "m", "param": "p"}}
    assert orjson.loads(envelope(kind.status, code, "m")) == wire.error_object(kind.status, code, "m")


# -- Envoy's configuration, as the control plane writes it -------------------------------------

SETTINGS = envoy_config.ListenerSettings()


def _listener() -> dict[str, Any]:
    doc = json_format.MessageToDict(envoy_config.listener(SETTINGS), preserving_proto_field_name=True)
    return dict(doc["filter_chains"][0]["filters"][0]["typed_config"])


def test_envoys_local_replies_use_the_tables_status_and_type():
    mappers = _listener()["local_reply_config"]["mappers"]
    codes = []
    for mapper in mappers:
        (added,) = mapper["headers_to_add"]
        assert added["header"]["key"] == wire.LOCAL_REPLY_HEADER
        code = added["header"]["value"]
        kind = wire.ERRORS[code]
        body = mapper["body_format_override"]["json_format"]["error"]
        assert (mapper["status_code"], body["type"], body["code"]) == (kind.status, kind.type, code)
        assert set(body) == {"type", "code", "message", "param"} and body["param"] is None
        comparison = mapper["filter"].get("status_code_filter", {}).get("comparison")
        if comparison is not None:  # Envoy's own status selects the reply: the code's status
            assert comparison["value"]["default_value"] == kind.status
        codes.append(code)
    assert sorted(codes) == sorted(
        {
            "upstream_timeout",
            "upstream_unavailable",
            "upstream_error",
            "not_found",
            "gateway_unavailable",
            "request_too_large",
            "request_timeout",
        }
    )


def test_the_listener_and_the_routes_use_the_wire_names():
    hcm = _listener()
    listener_ext_proc = hcm["http_filters"][0]
    assert listener_ext_proc["name"] == wire.EXT_PROC_FILTER
    receiving = listener_ext_proc["typed_config"]["metadata_options"]["receiving_namespaces"]["untyped"]
    assert receiving == [wire.ATTEMPT_METADATA]

    default, chain = envoy_config.default_route(SETTINGS), envoy_config.chain_route(SETTINGS)
    for entry in (default, chain):
        assert entry.route.cluster_header == wire.ROUTE_HEADER
        assert set(wire.INTERNAL_REQUEST_HEADERS) <= set(entry.request_headers_to_remove)
        assert list(entry.response_headers_to_remove) == list(wire.INTERNAL_RESPONSE_HEADERS)
    (served,) = chain.response_headers_to_add
    assert served.header.key == wire.SERVED_HEADER
    assert served.header.value == f"%UPSTREAM_METADATA({wire.TARGET_METADATA}:{wire.TARGET_MODEL_FIELD})%"

    # ext_proc names the chain route by the value the route configuration maps.
    table = envoy_config.route_configuration(default, chain)
    tree = table.virtual_hosts[0].matcher.matcher_tree
    assert tree.input.typed_config.value.decode(errors="ignore").endswith(wire.MODEL_ROUTE_HEADER)
    assert set(tree.exact_match_map.map) == {wire.CHAIN_ROUTE} and chain.name == wire.CHAIN_ROUTE
    route = ext_proc_config.Route("chat", ("backup",), ("5xx",), 0, 0, "chain_chat")
    mutation = ep.HeaderMutation.FromString(route.router["chain_chat"])
    assert (wire.MODEL_ROUTE_HEADER, wire.CHAIN_ROUTE.encode()) in [
        (h.header.key, h.header.raw_value) for h in mutation.set_headers
    ]


def test_ext_proc_reads_the_target_a_chain_cluster_declares():
    """The attempt filter's attribute, built from the cluster the control plane writes, names the
    target ext_proc translates for: both sides agree on the filter, attribute and metadata names."""
    provider = config_pb2.Provider(name="p", kind="openai", base_url="http://127.0.0.1:9", cluster="p")
    targets = [(config_pb2.Model(slug=slug, provider="p"), provider) for slug in ("chat", "backup")]
    cluster = envoy_config.chain_cluster("chain_chat", targets, SETTINGS)

    (options,) = cluster.typed_extension_protocol_options.values()
    doc = json_format.MessageToDict(_unpack_http_options(options), preserving_proto_field_name=True)
    attempt_filter = doc["http_filters"][0]
    assert attempt_filter["name"] == wire.EXT_PROC_FILTER
    (attribute,) = attempt_filter["typed_config"]["request_attributes"]
    forwarding = attempt_filter["typed_config"]["metadata_options"]["forwarding_namespaces"]["untyped"]
    assert forwarding == [wire.ATTEMPT_METADATA]

    slugs = []
    for priority in cluster.load_assignment.endpoints:
        metadata = priority.lb_endpoints[0].metadata
        attrs = struct_pb2.Struct()
        attrs.update({attribute: text_format.MessageToString(metadata)})
        request = ep.ProcessingRequest()
        request.attributes[attempt_filter["name"]].CopyFrom(attrs)
        assert attempt.is_attempt(request)
        slugs.append(attempt.target_slug(request.attributes))
    assert slugs == ["chat", "backup"]


def _unpack_http_options(options: Any) -> http_protocol_options_pb2.HttpProtocolOptions:
    message = http_protocol_options_pb2.HttpProtocolOptions()
    assert options.Unpack(message)
    return message


# -- the control plane's admin API ---------------------------------------------------------------


class _Body(BaseModel):
    name: str


def _admin_app() -> TestClient:
    app = FastAPI()
    cp_api_errors.install(app)

    @app.get("/raise/{kind}")
    def raise_(kind: str) -> None:
        classes = {
            "invalid": cp_errors.InvalidRequest,
            "missing": cp_errors.NotFound,
            "exists": cp_errors.AlreadyExists,
            "in_use": cp_errors.InUse,
            "token": cp_errors.Unauthorized,
        }
        if kind in classes:
            raise classes[kind]("refused")
        if kind == "race":
            raise IntegrityError("INSERT", {}, Exception("duplicate"))
        if kind == "teapot":
            raise HTTPException(418, "short and stout")
        raise RuntimeError("boom")

    @app.post("/body")
    def body(payload: _Body) -> None:
        return None

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (("get", "/raise/invalid"), "invalid_request"),
        (("get", "/raise/missing"), "not_found"),
        (("get", "/raise/exists"), "already_exists"),
        (("get", "/raise/in_use"), "in_use"),
        (("get", "/raise/token"), "invalid_admin_token"),
        (("get", "/raise/race"), "conflict"),
        (("get", "/raise/crash"), "internal_error"),
        (("get", "/nowhere"), "not_found"),  # Starlette's own 404
        (("post", "/raise/invalid"), "method_not_allowed"),  # Starlette's own 405
    ],
)
def test_the_control_planes_errors_use_the_tables_status_and_type(call, code):
    method, path = call
    response = getattr(_admin_app(), method)(path)
    kind = wire.ERRORS[code]
    assert response.status_code == kind.status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == kind.type


def test_the_control_planes_documented_exceptions_keep_the_codes_type():
    client = _admin_app()
    schema = client.post("/body", json={"name": 3})  # FastAPI's 422 for a schema violation
    assert schema.status_code == 422
    assert schema.json()["error"] | {"message": ""} == {
        "type": "invalid_request_error",
        "code": "invalid_request",
        "message": "",
        "param": "name",
    }
    bad_json = client.post("/body", content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    teapot = client.get("/raise/teapot")  # an HTTPException's own status, the code's type
    assert teapot.status_code == 418
    assert teapot.json() == wire.error_object(418, "invalid_request", "short and stout")


def test_every_control_plane_error_class_answers_its_table_status():
    classes = [cp_errors.ControlPlaneError, *cp_errors.ControlPlaneError.__subclasses__()]
    assert len(classes) >= 6
    for cls in classes:
        assert (cls.status, cls.code) == (wire.ERRORS[cls.code].status, cls.code)
        assert cls("m").envelope() == wire.error_object(cls.status, cls.code, "m")


# -- no copies ------------------------------------------------------------------------------------


def test_the_internal_headers_carry_the_internal_prefix():
    internal = [
        wire.ROUTE_HEADER,
        wire.MODEL_ROUTE_HEADER,
        wire.SERVED_HEADER,
        wire.LOCAL_REPLY_HEADER,
        wire.EXT_PROC_TOKEN_HEADER,
        wire.IDENTITY_HEADER,
        wire.BATCH_LINE_HEADER,
        wire.BATCH_RECOVER_HEADER,
        wire.PARENT_REQUEST_HEADER,
    ]
    assert all(name.startswith(wire.INTERNAL_HEADER_PREFIX) for name in internal)
    # and the public ones never do: a client is meant to read them
    public = [
        wire.MODEL_USED_HEADER,
        wire.CREDITS_USED_HEADER,
        wire.CHOICES_FAILED_HEADER,
        wire.CHOICES_ERROR_HEADER,
    ]
    assert not any(name.startswith(wire.INTERNAL_HEADER_PREFIX) for name in public)
    assert {*wire.INTERNAL_REQUEST_HEADERS, *wire.INTERNAL_RESPONSE_HEADERS} < set(internal)


def test_no_internal_header_is_spelled_outside_the_wire_module():
    """A grep: ext_proc, the control plane and the CLI name internal headers by wire's constants."""
    needle = wire.INTERNAL_HEADER_PREFIX
    assert needle in WIRE.read_text()
    spelled = []
    for folder in ("ext_proc", "control_plane", "infery"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml", ".html", ".js", ".css", ".ini"):
                for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                    if needle in line:
                        spelled.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert spelled == []


# -- Anthropic's error shape ------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(wire.ERRORS))
def test_every_code_has_an_anthropic_error_the_anthropic_sdk_reads(code: str) -> None:
    from anthropic.types import ErrorResponse

    status = wire.ERRORS[code].status
    doc = wire.anthropic_error_object(status, code, "why")
    parsed = ErrorResponse.model_validate(doc)
    assert parsed.error.type == wire.anthropic_error_type(status)
    assert doc["error"]["code"] == code  # the gateway's stable code, as in OpenAI's envelope


def test_anthropic_error_types_are_the_sdks() -> None:
    import typing

    from anthropic.types.shared.error_object import ErrorObject

    union = typing.get_args(ErrorObject)[0]
    known = {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}
    assert set(wire.ANTHROPIC_ERROR_TYPES.values()) <= known
    assert (
        wire.anthropic_error_type(418) == "invalid_request_error"
        and wire.anthropic_error_type(599) == "api_error"
    )
