"""fetch_media: refuses non-public addresses before any connection, enforces size, time and type.

Positive paths use a local server with allow_private=True; nothing here sends
traffic beyond loopback (refused URLs fail before connecting, and the vetted-IP
checks run on httpx.MockTransport).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ext_proc import media_fetch
from ext_proc.errors import GatewayError
from ext_proc.media_fetch import fetch_media, is_public
from ext_proc.translators.base import Media

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
PDF = b"%PDF-1.4\n%%EOF\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("host", ""))
        path = self.path
        if path == "/img.png":
            self._send(200, "image/png", PNG)
        elif path == "/doc.pdf":
            self._send(200, "application/pdf; charset=binary", PDF)
        elif path == "/page":
            self._send(200, "text/html", b"<html></html>")
        elif path == "/missing":
            self._send(404, "text/plain", b"nope")
        elif path == "/big":
            self._send(200, "image/png", b"\x00" * 2048)
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"100\r\n" + b"\x00" * 256 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            self.server.release.wait(5)
            self._send(200, "image/png", PNG)
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("location", f"/hop/{left - 1}" if left > 1 else "/img.png")
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self._send(404, "text/plain", b"")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hosts: list[str] = []
        self.release = threading.Event()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def base(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


async def test_fetches_images_and_pdfs(server: _Server) -> None:
    urls = [f"{base(server)}/img.png", f"{base(server)}/doc.pdf", f"{base(server)}/img.png"]
    media = await fetch_media(urls, allow_private=True)
    assert media == {urls[0]: Media("image/png", PNG), urls[1]: Media("application/pdf", PDF)}


async def test_uses_a_given_client_and_leaves_it_open(server: _Server) -> None:
    async with httpx.AsyncClient() as client:
        await fetch_media([f"{base(server)}/img.png"], client=client, allow_private=True)
        assert not client.is_closed


async def test_no_urls_no_work() -> None:
    assert await fetch_media([]) == {}


@pytest.mark.parametrize(
    ("path", "kw", "message"),
    [
        ("/big", {"max_bytes": 1024}, "larger than 1024 bytes"),
        ("/big-chunked", {"max_bytes": 1024}, "larger than 1024 bytes"),
        ("/slow", {"timeout_s": 0.3}, "timed out after 0.3s"),
        ("/page", {}, "not an image or PDF (text/html)"),
        ("/missing", {}, "answered HTTP 404"),
        ("/hop/4", {}, "redirected more than 3 times"),
    ],
)
async def test_failures(server: _Server, path: str, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(GatewayError) as info:
        await fetch_media([base(server) + path], allow_private=True, **kw)
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_image_url", "messages")
    assert message in info.value.message


async def test_follows_up_to_three_redirects_vetting_each_hop(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    vetted: list[str] = []
    real_vet = media_fetch._vet

    async def spy(url: str, allow_private: bool, allowed_hosts: Any = ()) -> Any:
        vetted.append(url.rsplit("/", 2)[-1])
        return await real_vet(url, allow_private, allowed_hosts)

    monkeypatch.setattr(media_fetch, "_vet", spy)
    media = await fetch_media([f"{base(server)}/hop/3"], allow_private=True)
    assert list(media.values()) == [Media("image/png", PNG)]
    assert vetted == ["3", "2", "1", "img.png"]


REFUSED = [
    "https://127.0.0.1/a.png",
    "https://10.1.2.3/a.png",
    "https://172.16.0.1/a.png",
    "https://192.168.1.1/a.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/a.png",
    "https://0.0.0.0/a.png",
    "https://224.0.0.1/a.png",
    "https://[::1]/a.png",
    "https://[fe80::1]/a.png",
    "https://[fd00::1]/a.png",
    "https://[::ffff:127.0.0.1]/a.png",
    "https://[::ffff:10.0.0.1]/a.png",
    "https://localhost/a.png",
    "https://localhost:8443/a.png",
]


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"a refused URL reached the transport: {request.url}")


@pytest.mark.parametrize("url", REFUSED)
async def test_private_addresses_are_refused_before_connecting(url: str) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_no_network)) as client:
        with pytest.raises(GatewayError) as info:
            await fetch_media([url], client=client)
    assert (info.value.status, info.value.code) == (400, "invalid_image_url")
    assert "refused" in info.value.message and "private or reserved address" in info.value.message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/a.png", "only https"),
        ("ftp://example.com/a.png", "only https"),
        ("file:///etc/passwd", "only https"),
        ("https://user:pw@example.com/a.png", "credentials"),
    ],
)
async def test_schemes_and_credentials_are_refused(url: str, message: str) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_no_network)) as client:
        with pytest.raises(GatewayError) as info:
            await fetch_media([url], client=client)
    assert "refused" in info.value.message and message in info.value.message


async def test_connects_to_the_vetted_address_with_original_host_and_sni(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS is asked once; the connection goes to that answer, so a rebinding DNS cannot redirect it."""
    lookups: list[str] = []
    public = ipaddress.ip_address("93.184.215.14")

    async def resolve(host: str, port: int) -> list[Any]:
        lookups.append(host)
        return [public]

    seen: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)

    monkeypatch.setattr(media_fetch, "_resolve", resolve)
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        media = await fetch_media(["https://images.example/cat.png?sig=secret"], client=client)
    assert list(media.values()) == [Media("image/png", PNG)]
    (request,) = seen
    assert lookups == ["images.example"]
    assert str(request.url) == "https://93.184.215.14/cat.png?sig=secret"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"


@pytest.mark.parametrize(
    ("url", "connect", "host"),
    [
        ("https://8.8.8.8/a.png", "https://8.8.8.8/a.png", "8.8.8.8"),
        (
            "https://[2606:4700::1111]:8443/a.png",
            "https://[2606:4700::1111]:8443/a.png",
            "[2606:4700::1111]:8443",
        ),
    ],
)
async def test_public_ip_literals(url: str, connect: str, host: str) -> None:
    seen: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)

    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        await fetch_media([url], client=client)
    (request,) = seen
    assert (str(request.url), request.headers["host"]) == (connect, host)
    assert "sni_hostname" not in request.extensions  # an IP has no name to send


async def test_a_hostname_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.7")]

    monkeypatch.setattr(media_fetch, "_resolve", resolve)
    async with httpx.AsyncClient(transport=httpx.MockTransport(_no_network)) as client:
        with pytest.raises(GatewayError) as info:
            await fetch_media(["https://mixed.example/a.png?token=abc"], client=client)
    assert "refused" in info.value.message
    assert "token=abc" not in info.value.message  # query strings may hold signatures


async def test_local_host_header_is_preserved(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(media_fetch, "_resolve", resolve)
    port = server.server_address[1]
    media = await fetch_media([f"http://media.test:{port}/img.png"], allow_private=True)
    assert list(media.values()) == [Media("image/png", PNG)]
    assert server.hosts[-1] == f"media.test:{port}"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("192.0.2.1", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public
