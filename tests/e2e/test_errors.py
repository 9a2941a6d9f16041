"""Every gateway error is OpenAI's envelope with a stable code."""

from __future__ import annotations

import httpx
import openai
import pytest

from infery.stack import Stack
from tests.conformance import assert_openai
from tests.e2e.support import MAX_REQUEST_BYTES, Admin, Tenant, eventually, new_tenant

CHAT = [{"role": "user", "content": "hi"}]


def _post(gateway: Stack, key: str | None, content: bytes, path: str = "/chat/completions") -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(gateway.base_url + path, content=content, headers=headers, timeout=30)


def _assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert_openai(body, "ErrorResponse")
    assert body["error"]["code"] == code, body
    assert set(body["error"]) >= {"type", "code", "message", "param"}
    assert resp.headers.get("x-request-id")
    return body


@pytest.mark.parametrize("key", [None, "inf_not-a-real-key", "sk-wrong-format"])
def test_missing_or_unknown_key_is_401(gateway: Stack, catalog, key):
    resp = _post(gateway, key, b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}')
    _assert_error(resp, 401, "invalid_api_key")
    if key:
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0).models.list()
        assert err.value.code == "invalid_api_key"


def test_revoked_key_is_refused_within_one_second(gateway: Stack, admin: Admin, catalog):
    tenant = new_tenant(admin, gateway, "revocation")
    client = tenant.client(gateway)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=CHAT).choices
    admin.call("DELETE", f"/workspaces/{tenant.workspace}/keys/{tenant.key_id}", expect=None)

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError as err:
            return err.code == "invalid_api_key"
        return False

    eventually(refused, timeout=1.0, interval=0.01)


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert err.value.code == "model_not_found"
    assert err.value.body["param"] == "model"


def test_model_outside_workspace_allowance_is_403(gateway: Stack, admin: Admin, catalog):
    tenant = new_tenant(admin, gateway, "restricted", allowed_models=["text-embedding-3-small"])
    client = tenant.client(gateway)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert err.value.code == "model_not_allowed"
    assert [m.id for m in client.models.list()] == ["text-embedding-3-small"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]", b'"text"'])
def test_invalid_json_is_400(gateway: Stack, tenant: Tenant, body: bytes):
    _assert_error(_post(gateway, tenant.key, body), 400, "invalid_json")


def test_missing_model_is_400_invalid_request(gateway: Stack, tenant: Tenant):
    body = _assert_error(_post(gateway, tenant.key, b'{"messages":[]}'), 400, "invalid_request")
    assert body["error"]["param"] == "model"


def test_oversized_body_is_413(gateway: Stack, tenant: Tenant):
    big = (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
        + b"x" * (MAX_REQUEST_BYTES + 1024)
        + b'"}]}'
    )
    _assert_error(_post(gateway, tenant.key, big), 413, "request_too_large")


def test_unknown_path_is_404_not_found(gateway: Stack, tenant: Tenant):
    _assert_error(_post(gateway, tenant.key, b"{}", path="/nope"), 404, "not_found")


def test_provider_error_is_translated(client: openai.OpenAI, openai_sim):
    openai_sim.script([{"status": 400}])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert err.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 503, "upstream_unavailable"),
        ({"action": "reset"}, 502, "upstream_error"),
    ],
)
def test_upstream_failures_are_enveloped(gateway: Stack, tenant: Tenant, openai_sim, step, status, code):
    openai_sim.script([step])
    resp = _post(gateway, tenant.key, b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}')
    _assert_error(resp, status, code)


def test_unreachable_provider_is_503(gateway: Stack, admin: Admin, tenant: Tenant):
    from infery.stack import free_port

    admin.provider("dead", "openai", f"http://127.0.0.1:{free_port()}/v1", "sk-x")
    admin.model("dead-model", "dead", "gpt-4o-mini")
    eventually(lambda: "dead-model" in [m.id for m in tenant.client(gateway).models.list()])
    resp = _post(gateway, tenant.key, b'{"model":"dead-model","messages":[{"role":"user","content":"hi"}]}')
    _assert_error(resp, 503, "upstream_unavailable")
