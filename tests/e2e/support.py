"""Helpers of the end-to-end tests: the admin API as an operator uses it, tenants, and waiting.

Configuration goes through the real admin API; clients are the real OpenAI SDK.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import psycopg
from sqlalchemy.engine import make_url

from infery.admin_client import AdminClient, AdminError
from infery.stack import Ports, Stack

ADMIN_TOKEN = "test-admin-" + secrets.token_hex(8)
SIM_KEY = "sk-sim-" + secrets.token_hex(8)
MAX_REQUEST_BYTES = 1024 * 1024
POSTGRES_URL = os.environ.get("INFERY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PRICES = {
    "input_per_mtok": "0.15",
    "cached_input_per_mtok": "0.075",
    "output_per_mtok": "0.60",
    "per_image": None,
    "per_audio_second": None,
    "per_mchar": None,
}
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """The first truthy result of ``check()`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, AdminError, httpx.HTTPError, openai.APIError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: last result {last!r}")
        time.sleep(interval)


class Admin(AdminClient):
    """The admin API with the test gateways' token and the default test prices."""

    def __init__(self, admin_url: str) -> None:
        super().__init__(admin_url, ADMIN_TOKEN)

    def model(self, slug: str, provider: str, upstream: str, prices: dict[str, Any] = PRICES) -> Any:
        return super().model(slug, provider, upstream, prices)


@dataclass
class Tenant:
    workspace: str
    member_id: str
    member_email: str
    key_id: str
    key: str

    def client(self, gateway: Stack, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway.base_url, api_key=self.key, max_retries=0, **kwargs)


def new_tenant(admin: Admin, gateway: Stack, workspace: str, **workspace_fields: Any) -> Tenant:
    admin.workspace(workspace, **workspace_fields)
    email = f"dev@{workspace}.example"
    member = admin.member(workspace, email)
    key = admin.key(workspace, member["id"])
    # The key is in force on the data plane once GET /v1/models accepts it.
    eventually(
        lambda: (
            httpx.get(
                f"{gateway.base_url}/models", headers={"authorization": f"Bearer {key['key']}"}
            ).status_code
            == 200
        )
    )
    return Tenant(workspace, member["id"], email, key["id"], key["key"])


def start_gateway(run_dir: Path, ext_procs: int = 1, ext_proc_uds: bool = True, **env: str) -> Stack:
    stack = Stack(
        run_dir,
        Ports.free(ext_procs),
        env={"INFERY_ADMIN_TOKEN": ADMIN_TOKEN, "INFERY_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES), **env},
        envoy_concurrency=1,
        ext_proc_uds=ext_proc_uds,
    )
    return stack.start()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for a control plane, dropped afterwards."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    name = f"infery_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
    ) as db:
        db.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_replica(primary: Stack, run_dir: Path, **env: str) -> Stack:
    """Another data plane (its own Envoy and ext_proc) on ``primary``'s control plane and files service.

    It is a Stack sharing the primary's control-plane ports and certificates, of which only
    ext_proc and Envoy are started: what a second machine running the data plane would run. Its
    listener comes from the same control plane, so it is the same address: both Envoys bind it
    with SO_REUSEPORT (Envoy's default on Linux) and the kernel spreads new connections between
    them, as a load balancer in front of two machines would. ``replica_of`` tells them apart.
    """
    ports = Ports.free(1)
    ports.listen, ports.admin = primary.ports.listen, primary.ports.admin
    ports.xds, ports.files = primary.ports.xds, primary.ports.files
    replica = Stack(run_dir, ports, env={**primary.env, **env}, envoy_concurrency=1)
    replica.pki = primary.pki
    try:
        for port in ports.ext_proc:
            replica.start_ext_proc(port)
        replica.start_envoy()
        eventually(lambda: envoy_stat(replica, "listener_manager.total_listeners_active") >= 1, timeout=30)
    except BaseException:
        replica.stop()
        raise
    return replica


def envoy_stat(stack: Stack, name: str) -> int:
    """One counter or gauge of ``stack``'s Envoy, from its admin socket."""
    text = stack.envoy_admin("/stats", filter=f"^{name.replace('.', '[.]')}$").text
    values = [int(line.rpartition(": ")[2]) for line in text.splitlines() if line.startswith(f"{name}: ")]
    return values[0] if values else 0


def replica_of(stacks: Sequence[Stack], client: httpx.Client, url: str, headers: dict[str, str]) -> int:
    """Which of ``stacks``' Envoys holds ``client``'s connection: the one whose connection count moves.

    ``client`` must hold at most one connection and nothing else may connect meanwhile.
    """
    before = [envoy_stat(stack, "http.infery.downstream_cx_total") for stack in stacks]
    client.get(url, headers=headers).raise_for_status()
    moved = [
        index
        for index, stack in enumerate(stacks)
        if envoy_stat(stack, "http.infery.downstream_cx_total") > before[index]
    ]
    if len(moved) != 1:
        raise AssertionError(f"connection counts moved on {moved}, not on exactly one Envoy")
    return moved[0]


def three_provider_catalog(admin: Admin, openai_url: str, anthropic_url: str, google_url: str) -> None:
    """One provider of each wire format, a model on each, and gpt-4o falling back across them."""
    admin.provider("openai", "openai", openai_url, SIM_KEY)
    admin.provider("anthropic", "anthropic", anthropic_url, SIM_KEY)
    admin.provider("google", "google", google_url, SIM_KEY)
    admin.model("gpt-4o", "openai", "gpt-4o")
    admin.model("gpt-4o-mini", "openai", "gpt-4o-mini")
    admin.model("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5")
    admin.model("gemini-2-5-flash", "google", "gemini-2.5-flash")
    admin.call(
        "PUT", "/routes/gpt-4o", {"fallbacks": ["claude-sonnet-4-5", "gemini-2-5-flash"], "retry_on": ["5xx"]}
    )
