"""A small client of the admin API (``/admin/v1``), for scripts, the tests and the benchmark.

Every call checks its status and raises :class:`AdminError` with the answer's
envelope otherwise, so a setup script fails at the call that went wrong.
"""

from __future__ import annotations

from typing import Any

import httpx


class AdminError(RuntimeError):
    pass


class AdminClient:
    def __init__(self, admin_url: str, token: str, timeout: float = 10) -> None:
        self.http = httpx.Client(
            base_url=admin_url + "/admin/v1", headers={"authorization": f"Bearer {token}"}, timeout=timeout
        )

    def call(self, method: str, path: str, json: Any = None, expect: int | None = None) -> Any:
        """One admin call; ``expect`` is the exact status wanted (default: any 2xx)."""
        resp = self.http.request(method, path, json=json)
        ok = resp.status_code == expect if expect is not None else resp.is_success
        if not ok:
            raise AdminError(f"{method} {path} → {resp.status_code}: {resp.text[:1000]}")
        return resp.json() if resp.content else None

    def provider(self, name: str, kind: str, base_url: str, api_key: str) -> Any:
        body = {"name": name, "kind": kind, "base_url": base_url, "api_key": api_key}
        return self.call("POST", "/providers", body, expect=201)

    def model(self, slug: str, provider: str, upstream: str, prices: dict[str, Any]) -> Any:
        body = {"slug": slug, "provider": provider, "upstream_model": upstream, "prices": prices}
        return self.call("POST", "/models", body, expect=201)

    def workspace(self, name: str, **fields: Any) -> Any:
        return self.call("POST", "/workspaces", {"name": name, **fields}, expect=201)

    def member(self, workspace: str, email: str, role: str = "member") -> Any:
        return self.call(
            "POST", f"/workspaces/{workspace}/members", {"email": email, "role": role}, expect=201
        )

    def key(self, workspace: str, member: str, name: str = "default") -> Any:
        """A new key: the answer's ``key`` is the ``inf_`` secret, shown only here."""
        return self.call(
            "POST", f"/workspaces/{workspace}/keys", {"name": name, "member": member}, expect=201
        )

    def usage_record(self, request_id: str) -> Any:
        """The usage record of one request, or None while it has not arrived."""
        resp = self.http.get(f"/usage/requests/{request_id}")
        return resp.json() if resp.status_code == 200 else None

    def usage(self, **params: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.call("GET", "/usage?" + str(httpx.QueryParams(params)))["rows"]
        return rows

    def close(self) -> None:
        self.http.close()
