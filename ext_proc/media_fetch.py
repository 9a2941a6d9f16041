"""Fetch the images and PDFs a provider needs as bytes, without becoming an SSRF proxy.

The URL comes from the caller, so every hop is vetted: https only, the host
is resolved here and every address it resolves to must be public, and the
connection goes to that vetted address (Host header and TLS SNI keep the
original name, so certificates still verify). A DNS answer that changes
between the check and the connect therefore cannot reach an internal service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import httpx

from ext_proc.errors import GatewayError
from ext_proc.translators.base import Media

MAX_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
DEFAULT_MAX_URLS = 10  # INFERY_MAX_MEDIA_URLS


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Where and how much the gateway fetches for one request (set per ext_proc process)."""

    allowed_hosts: frozenset[str] = frozenset()  # INFERY_MEDIA_ALLOWED_HOSTS: may be private
    max_urls: int = DEFAULT_MAX_URLS


_CONCURRENCY = 8
_REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HEADERS = {
    "accept": "image/*, application/pdf",
    "accept-encoding": "identity",  # the size limit then applies to what is actually read
    # No reuse: a pooled connection is keyed by IP, and its TLS name was checked for the host
    # that opened it, not necessarily for the next one served from the same address.
    "connection": "close",
    "user-agent": "InferyGateway-media-fetch/1",
}


@dataclass(frozen=True, slots=True)
class _Hop:
    url: httpx.URL  # the vetted address to connect to
    host_header: str
    sni: str | None


async def fetch_media(
    urls: Iterable[str],
    *,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = 10,
    client: httpx.AsyncClient | None = None,
    allow_private: bool = False,
    allowed_hosts: Collection[str] = (),
    max_urls: int = DEFAULT_MAX_URLS,
) -> dict[str, Media]:
    """Download each URL (image/* or application/pdf only).

    ``allow_private`` lifts the address check and allows plain http; it
    exists for tests against a local server, never for production.
    ``allowed_hosts`` ("host:port") lifts them for those hosts only: an
    operator's internal media server (INFERY_MEDIA_ALLOWED_HOSTS).
    More than ``max_urls`` distinct URLs are refused before any is fetched
    (GatewayError 400 ``too_many_media_urls``): each costs a download of up to
    ``max_bytes`` held in memory.
    Raises GatewayError(400, "invalid_image_url") on any failure.
    """
    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}
    if len(unique) > max_urls:
        raise GatewayError(
            400,
            "too_many_media_urls",
            f"A request may name at most {max_urls} image or file URLs for the gateway to fetch; "
            f"this one names {len(unique)}. Send the rest inline (data: URIs) or in another request.",
            "messages",
        )
    own = client is None
    http = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(url: str) -> Media:
        async with limit:
            return await _fetch(http, url, max_bytes, timeout_s, allow_private, allowed_hosts)

    tasks = [asyncio.ensure_future(one(url)) for url in unique]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if own:
            await http.aclose()
    return dict(zip(unique, results, strict=True))


def _fail(message: str) -> GatewayError:
    return GatewayError(400, "invalid_image_url", message, "messages")


def _shown(url: str) -> str:
    """The URL for error messages, without a query string that may hold a signature."""
    shown = url.split("?", 1)[0].split("#", 1)[0]
    return shown if len(shown) <= 100 else shown[:97] + "..."


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    allowed_hosts: Collection[str],
) -> Media:
    try:
        async with asyncio.timeout(timeout_s):
            return await _follow(client, url, max_bytes, timeout_s, allow_private, allowed_hosts)
    except TimeoutError:
        raise _fail(f"fetching {_shown(url)} timed out after {timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        raise _fail(f"could not fetch {_shown(url)} ({type(exc).__name__})") from None


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    allowed_hosts: Collection[str],
) -> Media:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        hop = await _vet(current, allow_private, allowed_hosts)
        extensions = {"sni_hostname": hop.sni} if hop.sni else {}
        headers = {**_HEADERS, "host": hop.host_header}
        request = client.build_request(
            "GET", hop.url, headers=headers, extensions=extensions, timeout=timeout_s
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise _fail(f"{_shown(current)} redirected without a location")
                current = str(httpx.URL(current).join(location))
                continue
            return await _read(response, current, max_bytes)
        finally:
            await response.aclose()
    raise _fail(f"{_shown(url)} redirected more than {MAX_REDIRECTS} times")


async def _read(response: httpx.Response, url: str, max_bytes: int) -> Media:
    if response.status_code != 200:
        raise _fail(f"{_shown(url)} answered HTTP {response.status_code}")
    mime = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (mime.startswith("image/") or mime == "application/pdf"):
        raise _fail(f"{_shown(url)} is not an image or PDF ({mime or 'no content-type'})")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _fail(f"{_shown(url)} is larger than {max_bytes} bytes")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise _fail(f"{_shown(url)} is larger than {max_bytes} bytes")
    return Media(mime, bytes(data))


async def _vet(url: str, allow_private: bool, allowed_hosts: Collection[str] = ()) -> _Hop:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise _fail(f"{_shown(url)} is not a valid URL") from None
    default_port = 443 if parsed.scheme == "https" else 80
    if f"{parsed.host}:{parsed.port or default_port}" in allowed_hosts:
        allow_private = True
    if parsed.scheme != "https" and not (allow_private and parsed.scheme == "http"):
        raise _fail(f"refused {_shown(url)}: only https URLs can be fetched")
    if parsed.userinfo:
        raise _fail(f"refused {_shown(url)}: URLs with credentials are not fetched")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise _fail(f"{_shown(url)} has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise _fail(f"refused {_shown(url)}: {host} resolves to a private or reserved address")
    is_literal = _is_ip(host)
    name = f"[{host}]" if is_literal and ":" in host else host
    return _Hop(
        url=parsed.copy_with(host=str(addresses[0])),
        host_header=name if parsed.port is None else f"{name}:{port}",
        sni=None if is_literal or parsed.scheme != "https" else host,
    )


async def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _fail(f"cannot resolve {host}") from None
    addresses = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _fail(f"cannot resolve {host}")
    return addresses


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only; IPv6 forms that embed an IPv4 address are judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )
