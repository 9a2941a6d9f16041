"""The real gateway (control plane + ext_proc + Envoy), configured through its admin API.

Set up the way an operator would: providers, priced models, a workspace without limits, a
member and an ``inf_`` key. The bench then talks to it like any OpenAI client.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infery.admin_client import AdminClient
from infery.stack import Ports, Stack

PRICES = {
    "input_per_mtok": "0.15",
    "cached_input_per_mtok": "0.075",
    "output_per_mtok": "0.60",
    "per_image": None,
    "per_audio_second": None,
    "per_mchar": None,
}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider to register: the models served through it and where it listens."""

    name: str
    kind: str
    base_url: str
    api_key: str
    models: tuple[tuple[str, str], ...]  # (slug, upstream model)


def start(
    run_dir: Path,
    ext_procs: int,
    envoy_concurrency: int,
    env: dict[str, str] | None = None,
    batch_workers: int = 0,
    ext_proc_wrapper: tuple[str, ...] = (),
) -> tuple[Stack, str]:
    """A running gateway and its admin token; the caller stops it. ``env``: settings over the
    defaults (a bench toggle: metrics off, tracing on). No batch worker unless asked: the other
    rows measure live traffic alone. ``ext_proc_wrapper``: a command ext_proc runs under (a
    profiler), which may then take ten times longer to start."""
    token = "adm_bench_" + secrets.token_hex(12)
    stack = Stack(
        run_dir,
        Ports.free(ext_procs),
        env={"INFERY_ADMIN_TOKEN": token, **(env or {})},
        envoy_concurrency=envoy_concurrency,
        batch_workers=batch_workers,
        ext_proc_wrapper=ext_proc_wrapper,
        ext_proc_start_s=600.0 if ext_proc_wrapper else 60.0,
    )
    return stack.start(), token


def configure(stack: Stack, token: str, upstreams: list[Upstream], probe_body: dict[str, Any]) -> str:
    """Registers ``upstreams`` and returns an ``inf_`` key once every model answers through Envoy."""
    admin = AdminClient(stack.admin_url, token)
    try:
        for up in upstreams:
            admin.provider(up.name, up.kind, up.base_url, up.api_key)
            for slug, upstream_model in up.models:
                admin.model(slug, up.name, upstream_model, PRICES)
        # A workspace with no rate limits and no budget, one member, one key.
        admin.workspace("bench")
        member = admin.member("bench", "bench@bench.example")
        key: str = admin.key("bench", member["id"], name="bench")["key"]
    finally:
        admin.close()
    for up in upstreams:
        for slug, _ in up.models:
            _wait_serving(stack, key, {**probe_body, "model": slug})
    _wait_key(stack, key)
    return key


def _wait_key(stack: Stack, key: str, timeout_s: float = 30.0) -> None:
    """The key reaches ext_proc over xDS: poll ``GET /v1/models`` (no provider needed) until it works."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(f"{stack.base_url}/models", headers={"authorization": f"Bearer {key}"}).status_code
                == 200
            ):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the bench key was not in force within {timeout_s}s\n{stack.logs()}")


def _wait_serving(stack: Stack, key: str, body: dict[str, Any], timeout_s: float = 30.0) -> None:
    """Configuration reaches Envoy and ext_proc asynchronously (xDS): poll until the model works."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = httpx.post(
                f"{stack.base_url}/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=10,
            )
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"model {body['model']!r} not served by the gateway within {timeout_s}s: {last}\n{stack.logs()}"
    )
