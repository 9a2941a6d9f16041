"""``file_id`` in requests: the gateway's stored files, put inline for every provider.

A chat ``file`` part, or a Responses ``input_file``/``input_image`` part, may name a file
uploaded to ``/v1/files`` instead of carrying its bytes. No provider knows the gateway's ids
(an OpenAI provider has its own), so before translating, ext_proc fetches each named file
from the files service, as the requesting workspace, and the endpoint rewrites the part into
what the translators already read (:meth:`~ext_proc.endpoints.base.Endpoint.file_refs` says
where an endpoint's requests name files, :meth:`~ext_proc.endpoints.base.Endpoint.inline_file`
how one is written: a document as ``file_data``, an image as an image part). The rewritten
request is a copy: the client's own request, with its ids, is what is kept (the Responses
API's stored input) and fingerprinted.

The type comes from the bytes (their signature), not from what the uploader claimed. A
file of another workspace is ``404 not_found``, exactly as one that does not exist: the
files service is asked with this request's signed identity, and it answers for that
workspace only. Fetched over mutual TLS with the data plane's client certificate, like
Envoy's own connections to it. At most :data:`MAX_FILES` files and :data:`MAX_BYTES` in all,
held in memory for this request only (they become part of the provider's request body, which
stays under the request size limit, 32 MiB by default, once base64-encoded).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
from infery_proto import identity_assertion

from ext_proc.endpoints.base import Endpoint, FileRef
from ext_proc.errors import GatewayError

MAX_BYTES = 20 * 1024 * 1024  # all files of one request: as for one fetched image or PDF (media_fetch.py)
MAX_FILES = 10
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_FILENAME = re.compile(r"filename\*=UTF-8''([^;]+)")


def sniff(data: bytes) -> str:
    """The media type of ``data`` from its first bytes; UTF-8 text is text/plain."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


@dataclass(frozen=True, slots=True)
class FilesService:
    """Where ext_proc reads stored files: the files service's URL, and TLS to it."""

    url: str  # INFERY_FILES_SERVICE, e.g. https://infery-files:8082
    tls: ssl.SSLContext | bool = True

    @classmethod
    def from_env(cls, url: str, ca: str, cert: str, key: str) -> FilesService:
        """With a CA (INFERY_XDS_TLS_*), verify the service by it and present our client certificate."""
        if not ca:
            return cls(url.rstrip("/"))
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
        return cls(url.rstrip("/"), context)


async def resolve(
    body: dict[str, Any],
    refs: list[FileRef],
    endpoint: Endpoint,
    service: FilesService | None,
    key: bytes,
    identity: identity_assertion.Identity,
    timeout_s: float = 10,
) -> dict[str, Any]:
    """A copy of ``body`` with every stored file ``refs`` names (``endpoint.file_refs(body)``,
    not empty) inline; ``body`` itself is left as the client sent it."""
    if service is None or not key:
        raise GatewayError(503, "upstream_unavailable", "The gateway cannot read stored files here.")
    if len({ref.file_id for ref in refs}) > MAX_FILES:
        where = refs[0].at.partition("[")[0]  # the list they are in: "messages", "input"
        raise GatewayError(400, "invalid_request", f"A request may name at most {MAX_FILES} files.", where)
    # In a task of its own: the body phase may be resumed in another task than it began in
    # (ext_proc/deadline.py), and httpx's connection locks must be left in the task that took them.
    task = asyncio.ensure_future(_fetch_all(refs, service, key, identity, timeout_s))
    try:
        fetched = await task
    finally:
        task.cancel()
    inlined = orjson.loads(orjson.dumps(body))
    for ref in endpoint.file_refs(inlined):  # the same parts, in the same order, in the copy
        filename, data = fetched[ref.file_id]
        mime = sniff(data)
        endpoint.inline_file(
            ref.part, filename, mime, f"data:{mime};base64,{base64.b64encode(data).decode()}"
        )
    return inlined


async def _fetch_all(
    refs: list[FileRef],
    service: FilesService,
    key: bytes,
    identity: identity_assertion.Identity,
    timeout_s: float,
) -> dict[str, tuple[str, bytes]]:
    fetched: dict[str, tuple[str, bytes]] = {}
    total = 0
    async with httpx.AsyncClient(verify=service.tls, timeout=timeout_s) as client:
        for ref in refs:
            if ref.file_id not in fetched:
                fetched[ref.file_id] = await _fetch(
                    client, service, key, identity, ref.file_id, ref.at, MAX_BYTES - total
                )
                total += len(fetched[ref.file_id][1])
    return fetched


async def _fetch(
    client: httpx.AsyncClient,
    service: FilesService,
    key: bytes,
    identity: identity_assertion.Identity,
    file_id: str,
    at: str,
    room: int,
) -> tuple[str, bytes]:
    """The file's name and bytes; at most ``room`` bytes (what the request's files may still add)."""
    if not re.fullmatch(r"file-[A-Za-z0-9_-]{1,60}", file_id):
        raise GatewayError(404, "not_found", f"No such File object: {file_id}.", at)
    path = f"/v1/files/{file_id}/content"
    headers = {identity_assertion.HEADER: identity_assertion.sign(key, identity, "GET", path)}
    try:
        async with client.stream("GET", service.url + path, headers=headers) as response:
            if response.status_code == 404:
                raise GatewayError(404, "not_found", f"No such File object: {file_id}.", at)
            if response.status_code != 200:
                raise GatewayError(
                    502, "upstream_error", f"The files service answered {response.status_code}."
                )
            if int(response.headers.get("content-length") or 0) > room:
                raise _too_large(file_id, at)
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > room:
                    raise _too_large(file_id, at)
            named = _FILENAME.search(response.headers.get("content-disposition", ""))
    except httpx.HTTPError as exc:
        raise GatewayError(503, "upstream_unavailable", f"The files service is unreachable: {exc}.") from None
    return (unquote(named.group(1)) if named else file_id), bytes(data)


def _too_large(file_id: str, at: str) -> GatewayError:
    return GatewayError(
        400,
        "invalid_request",
        f"The file {file_id} takes the request's files over {MAX_BYTES} bytes, too many to send inline.",
        at,
    )
