"""Policy applies to what is served, not only to what was asked.

A fallback the workspace may not use is skipped; limits are admitted before any media
URL is fetched, and a request names only so many of them; idempotent replays count
against RPM and go only to keys of the member who made the first request, unless the
workspace shares them.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import (
    SIM_KEY,
    Admin,
    Tenant,
    eventually,
    new_tenant,
    start_gateway,
    three_provider_catalog,
)

HI = [{"role": "user", "content": "Say hello in a few words"}]
MAX_MEDIA_URLS = 2
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class MediaServer:
    """A private image host the gateway may fetch from; counts what it served."""

    def __init__(self) -> None:
        hits = self.hits = [0]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[0] += 1
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.png"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Gw:
    def __init__(self, stack: Stack, admin: Admin, sims: dict[str, SimulatorProcess], media: MediaServer):
        self.stack, self.admin, self.sims, self.media = stack, admin, sims, media

    def tenant(self, **workspace: Any) -> Tenant:
        return new_tenant(self.admin, self.stack, "ws-" + secrets.token_hex(4), **workspace)

    def post(self, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.stack.base_url}/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}", **headers},
            timeout=30,
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    media = MediaServer()
    try:
        with (
            SimulatorProcess("openai", api_key=SIM_KEY) as primary,
            SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
            SimulatorProcess("google", api_key=SIM_KEY) as gemini,
        ):
            stack = start_gateway(
                Path(tmp_path_factory.mktemp("policy")),
                INFERY_EJECT_AFTER_FAILURES="1000",
                INFERY_MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{media.port}",
                INFERY_MAX_MEDIA_URLS=str(MAX_MEDIA_URLS),
            )
            try:
                admin = Admin(stack.admin_url)
                three_provider_catalog(admin, primary.base_url, claude.base_url, gemini.base_url)
                yield Gw(stack, admin, {"openai": primary, "anthropic": claude, "google": gemini}, media)
            finally:
                stack.stop()
    finally:
        media.close()


@pytest.fixture(autouse=True)
def _clear(gw: Gw) -> None:
    for sim in gw.sims.values():
        sim.clear()
    gw.media.hits[0] = 0


def _images(gw: Gw, n: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is in these images?"}]
    content += [{"type": "image_url", "image_url": {"url": gw.media.url(f"i{i}")}} for i in range(n)]
    return [{"role": "user", "content": content}]


# -- fallbacks ------------------------------------------------------------------


def test_a_fallback_the_workspace_may_not_use_is_skipped(gw: Gw):
    tenant = gw.tenant(allowed_models=["gpt-4o", "gemini-2-5-flash"])
    forbidden = gw.post(tenant.key, {"model": "claude-sonnet-4-5", "messages": HI})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "model_not_allowed"

    gw.sims["openai"].script([{"status": 503}])
    resp = gw.post(tenant.key, {"model": "gpt-4o", "messages": HI})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == "gemini-2-5-flash"
    assert resp.headers["x-fallback-from"] == "gpt-4o"
    assert gw.sims["anthropic"].requests() == [], "the excluded target was never called"
    record = eventually(lambda: gw.admin.usage_record(resp.headers["x-request-id"]))
    assert record["model_used"] == "gemini-2-5-flash"


def test_a_chain_with_no_fallback_the_workspace_may_use_fails_clearly(gw: Gw):
    tenant = gw.tenant(allowed_models=["gpt-4o"])
    gw.sims["openai"].script([{"status": 503}])
    resp = gw.post(tenant.key, {"model": "gpt-4o", "messages": HI})
    assert resp.status_code == 503, resp.text  # the primary's own failure, not a fallback's answer
    message = resp.json()["error"]["message"]
    assert "not allowed for this workspace: claude-sonnet-4-5, gemini-2-5-flash" in message
    assert gw.sims["anthropic"].requests() == [] and gw.sims["google"].requests() == []
    assert len(gw.sims["openai"].requests()) == 1, "the primary was tried once"


def test_changing_allowed_models_changes_the_chain(gw: Gw):
    tenant = gw.tenant(allowed_models=["gpt-4o", "claude-sonnet-4-5", "gemini-2-5-flash"])
    gw.sims["openai"].script([{"status": 503}])
    first = gw.post(tenant.key, {"model": "gpt-4o", "messages": HI})
    assert first.headers["x-model-used"] == "claude-sonnet-4-5"
    narrower = {"allowed_models": ["gpt-4o", "gemini-2-5-flash"]}
    gw.admin.call("PUT", f"/workspaces/{tenant.workspace}", narrower)

    def served_by_gemini() -> bool:
        gw.sims["openai"].script([{"status": 503}])
        resp = gw.post(tenant.key, {"model": "gpt-4o", "messages": HI})
        gw.sims["openai"].clear()
        # Never the excluded target: the old chain refuses it until the new one is in force.
        assert resp.headers.get("x-model-used") != "claude-sonnet-4-5", resp.text
        return resp.headers.get("x-model-used") == "gemini-2-5-flash"

    eventually(served_by_gemini)


# -- media ----------------------------------------------------------------------


def test_media_urls_per_request_are_capped(gw: Gw):
    tenant = gw.tenant()
    ok = gw.post(tenant.key, {"model": "gemini-2-5-flash", "messages": _images(gw, MAX_MEDIA_URLS)})
    assert ok.status_code == 200, ok.text
    gw.media.hits[0] = 0
    resp = gw.post(tenant.key, {"model": "gemini-2-5-flash", "messages": _images(gw, MAX_MEDIA_URLS + 1)})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "too_many_media_urls" and error["param"] == "messages"
    assert gw.media.hits[0] == 0, "nothing was fetched"


def test_limits_are_admitted_before_any_media_url_is_fetched(gw: Gw):
    tenant = gw.tenant(rpm=1)
    assert gw.post(tenant.key, {"model": "gpt-4o-mini", "messages": HI}).status_code == 200
    resp = gw.post(tenant.key, {"model": "gemini-2-5-flash", "messages": _images(gw, 1)})
    assert resp.status_code == 429, resp.text
    assert gw.media.hits[0] == 0, "a request over its limit made the gateway fetch media"


# -- idempotent replays ---------------------------------------------------------


def test_idempotent_replays_count_against_rpm(gw: Gw):
    tenant = gw.tenant(rpm=2)
    body = {"model": "gpt-4o-mini", "messages": HI}
    first = gw.post(tenant.key, body, **{"idempotency-key": "k1"})
    replay = gw.post(tenant.key, body, **{"idempotency-key": "k1"})
    assert first.status_code == 200 and replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    third = gw.post(tenant.key, body)
    assert third.status_code == 429, "the replay counted as a request"
    assert len(gw.sims["openai"].requests()) == 1


def _in_force(gw: Gw, key: str) -> str:
    """``key``, once the data plane accepts it."""
    models = f"{gw.stack.base_url}/models"
    eventually(lambda: httpx.get(models, headers={"authorization": f"Bearer {key}"}).status_code == 200)
    return key


def _second_member_key(gw: Gw, tenant: Tenant) -> str:
    member = gw.admin.member(tenant.workspace, f"other@{tenant.workspace}.example")
    return _in_force(gw, gw.admin.key(tenant.workspace, member["id"])["key"])


def test_a_replay_goes_only_to_keys_of_the_same_member(gw: Gw):
    tenant = gw.tenant()
    other = _second_member_key(gw, tenant)
    own_second_key = _in_force(gw, gw.admin.key(tenant.workspace, tenant.member_id, name="second")["key"])
    body = {"model": "gpt-4o-mini", "messages": HI}
    first = gw.post(tenant.key, body, **{"idempotency-key": "shared-key"})
    assert first.status_code == 200
    stranger = gw.post(other, body, **{"idempotency-key": "shared-key"})
    assert stranger.status_code == 200
    assert "idempotent-replayed" not in stranger.headers, "another member got the first member's answer"
    assert stranger.json()["id"] != first.json()["id"]
    same_member = gw.post(own_second_key, body, **{"idempotency-key": "shared-key"})
    assert same_member.headers.get("idempotent-replayed") == "true"
    assert same_member.json()["id"] == first.json()["id"]


def test_a_workspace_may_share_replays_between_members(gw: Gw):
    tenant = gw.tenant(share_idempotent_replays=True)
    other = _second_member_key(gw, tenant)
    body = {"model": "gpt-4o-mini", "messages": HI}
    first = gw.post(tenant.key, body, **{"idempotency-key": "team-key"})
    replay = gw.post(other, body, **{"idempotency-key": "team-key"})
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json()["id"] == first.json()["id"]
