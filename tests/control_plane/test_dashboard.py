"""The dashboard: three local files served without a token, calling only /admin/v1 routes that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from typing import Any

import pytest
from cp_support import assert_error
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Match

from control_plane.dashboard.serve import STATIC
from control_plane.schemas import PROVIDER_KINDS, RETRY_ON, ROLES, Prices

ASSETS = {
    "/dashboard": "text/html",
    "/dashboard/app.js": "text/javascript",
    "/dashboard/app.css": "text/css",
}
# api("METHOD", "/admin/v1/...") is the only way app.js talks to the server.
API_CALL = re.compile(r'\bapi\(\s*"([A-Z]+)",\s*"([^"]*)"')


class _Fields(HTMLParser):
    """Collects each form's named controls: form id -> name -> values (option texts, checkbox values)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._form: str | None = None
        self._select: str | None = None
        self._in_option = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        self.inline += [k for k, _ in attrs if k == "style" or k.startswith("on")]
        if tag == "script" and "src" not in a:
            self.inline.append("script")
        if tag == "form":
            self._form = a.get("id")
        elif self._form and tag == "select":
            self._select = a.get("name")
        elif self._form and tag == "option":
            self._in_option = True
        elif self._form and tag == "input" and a.get("name"):
            values = self.forms[self._form][str(a["name"])]
            if a.get("type") == "checkbox":
                values.append(str(a.get("value")))

    def handle_data(self, data: str) -> None:
        if self._in_option and self._form and self._select:
            self.forms[self._form][self._select].append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "option":
            self._in_option = False


@pytest.fixture
def anonymous(client: TestClient) -> TestClient:
    client.headers.pop("Authorization")
    return client


def _page() -> _Fields:
    parser = _Fields()
    parser.feed((STATIC / "index.html").read_text())
    return parser


def _js() -> str:
    return (STATIC / "app.js").read_text()


def test_loads_without_a_token_but_the_api_still_needs_one(anonymous: TestClient) -> None:
    for path, media_type in ASSETS.items():
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == media_type
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in response.headers["content-security-policy"]
    page = anonymous.get("/dashboard").text
    assert '<script src="/dashboard/app.js"' in page and 'href="/dashboard/app.css"' in page
    assert anonymous.get("/dashboard/app.js").text == _js()
    assert_error(anonymous.get("/admin/v1/workspaces"), 401, "invalid_admin_token")
    assert_error(anonymous.get("/dashboard/../admin/v1/workspaces"), 401, "invalid_admin_token")
    assert anonymous.get("/dashboard/index.html").status_code == 404  # no directory serving
    assert anonymous.get("/dashboard/serve.py").status_code == 404


def test_adds_only_its_three_get_routes(client: TestClient) -> None:
    app: Any = client.app
    added = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/dashboard")
        for method in route.methods or ()
    }
    assert added == {("GET", path) for path in ASSETS}
    assert not _routed(app, "POST", "/dashboard") and not _routed(app, "GET", "/dashboard/sample")
    assert not any(path.startswith("/dashboard") for path in client.get("/openapi.json").json()["paths"])


def test_references_only_local_assets() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://", text, re.IGNORECASE), name
        assert "@import" not in text and "url(" not in text, name
    page = _page()
    assert page.refs, "the page links its script and stylesheet"
    assert all(ref.startswith(("/dashboard/", "#")) for ref in page.refs), page.refs
    assert page.inline == []  # the CSP forbids inline scripts, styles and handlers


def _routed(app: Any, method: str, template: str) -> bool:
    """Does one of app.routes fully match this call, with sample values in the placeholders?"""
    path = re.sub(r"\{\w+\}", "sample", template)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def test_every_data_call_is_an_existing_admin_route(client: TestClient) -> None:
    app: Any = client.app
    js = _js()
    calls = set(API_CALL.findall(js))
    assert all(path.startswith("/admin/v1/") or path == "/admin/v1" for _, path in calls)
    assert [call for call in calls if not _routed(app, *call)] == []
    # The placeholders are the server's own parameter names (what the page substitutes).
    declared = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    assert calls - declared == set()
    # Everything the brief asks for is reachable from the page.
    assert {
        ("POST", "/admin/v1/providers"),
        ("DELETE", "/admin/v1/providers/{name}"),
        ("POST", "/admin/v1/models"),
        ("DELETE", "/admin/v1/models/{slug}"),
        ("GET", "/admin/v1/routes"),
        ("PUT", "/admin/v1/routes/{slug}"),
        ("GET", "/admin/v1/workspaces"),
        ("GET", "/admin/v1/workspaces/{name}/members"),
        ("POST", "/admin/v1/workspaces/{name}/keys"),
        ("DELETE", "/admin/v1/workspaces/{name}/keys/{key_id}"),
        ("GET", "/admin/v1/usage"),
        ("GET", "/admin/v1/workspaces/{name}/files"),
    } <= calls
    # No path reaches the network another way.
    assert js.count('"/admin/v1') == len(API_CALL.findall(js))
    assert js.count("fetch(") == 1
    for other in ("XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon", "import("):
        assert other not in js


def test_renders_api_data_as_text_only() -> None:
    js = _js()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in js, sink
    assert "sessionStorage" in js and "localStorage" not in js
    assert "parseFloat" not in js  # credits stay decimal strings


def test_forms_match_the_admin_api(client: TestClient) -> None:
    forms = _page().forms
    assert forms["provider-form"]["kind"] == list(PROVIDER_KINDS)
    assert forms["route-form"]["retry_on"] == list(RETRY_ON)
    assert sorted(forms["member-form"]["role"]) == sorted(ROLES)
    price_fields = set(Prices.model_fields)
    assert price_fields <= set(forms["model-form"])
    assert all(f'"{name}"' in _js() for name in price_fields)

    usage = client.get("/openapi.json").json()["paths"]["/admin/v1/usage"]["get"]["parameters"]
    query = {p["name"]: p for p in usage}
    assert set(forms["usage-form"]) <= set(query)
    group_by = query["group_by"]["schema"]["anyOf"][0]["enum"]
    assert sorted(forms["usage-form"]["group_by"]) == sorted(group_by)


def test_usage_query_the_page_sends_is_accepted(client: TestClient) -> None:
    # The exact query showUsage() builds: empty filters are dropped, dates are yyyy-mm-dd.
    params: dict[str, Any] = {"workspace": "ws-1", "from": "2025-03-01", "to": "2025-03-02"}
    for group_by in _page().forms["usage-form"]["group_by"]:
        response = client.get("/admin/v1/usage", params=params | {"group_by": group_by})
        assert response.status_code == 200, response.text
    assert client.get("/admin/v1/usage", params=params).json() == {"rows": []}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_parses() -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--check", str(STATIC / "app.js")], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
