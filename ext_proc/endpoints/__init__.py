"""Every inbound API the gateway serves, one module each, found by the request's path.

Each module defines one :class:`~.base.Endpoint` subclass and its instance ``ENDPOINT``:
what the endpoint needs from the gateway (paths and methods, how its body travels,
whether it streams, its parameter checks, its token estimates, what of its usage is
priced). Its translators, one per provider wire format, are in ext_proc/translators/
(``<endpoint>_<wire format>.py``). Adding an endpoint is adding its module, one line
in :data:`SERVED`, and its translators.

Served: ``chat_completions.py``, ``embeddings.py``, ``images.py`` (generations),
``anthropic_messages.py`` and ``anthropic_count_tokens.py`` (Anthropic's Messages API, in
Anthropic's shapes), ``moderations.py``, ``completions.py`` (legacy),
``audio_speech.py`` (JSON in, the provider's audio bytes out, never through ext_proc; priced
per character of ``input``), ``audio_transcriptions.py`` and ``audio_translations.py``
(multipart in, ``RequestBody.STREAMED``: the form is read and rewritten as it passes; json,
text, srt, vtt or verbose_json out; priced per second of audio), ``responses.py`` (the
Responses API, ``POST /v1/responses``, and ``/v1/responses/{id}``, ``{id}/input_items``), and,
answered from the headers alone (``RequestBody.HEADERS_ONLY``, not metered by ext_proc):
``models.py`` (``GET /v1/models``, ``/v1/models/{id}``) and ``files.py`` (``/v1/files`` and
below: authenticated here, the bytes streamed by Envoy to the files service, which stores them
and writes their usage records).

Planned (SPEC.md), each one module here:

- ``batches.py``: ``/v1/batches`` and ``/v1/batches/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ext_proc.endpoints import (
    anthropic_count_tokens,
    anthropic_messages,
    audio_speech,
    audio_transcriptions,
    audio_translations,
    chat_completions,
    completions,
    embeddings,
    files,
    images,
    models,
    moderations,
    responses,
)
from ext_proc.endpoints.base import Endpoint


class Registry:
    """Endpoints by path: a dict lookup for exact paths; paths under a prefix ("/v1/files/")
    are found by their first two segments, also one dict lookup."""

    __slots__ = ("_exact", "_under", "by_path", "endpoints")

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self._exact: dict[str, Endpoint] = {}
        self._under: dict[str, Endpoint] = {}
        for endpoint in self.endpoints:
            for path in endpoint.paths:
                table = self._under if path.endswith("/") else self._exact
                if path in table:
                    raise ValueError(f"{path} is served by both {table[path].name} and {endpoint.name}")
                table[path] = endpoint
        # The endpoint serving a path (no query string), or None: an unknown path. Without
        # prefixes it is the exact table's own get: no Python call on the hot path.
        self.by_path: Callable[[str], Endpoint | None] = (
            self._by_path_or_prefix if self._under else self._exact.get
        )

    def _by_path_or_prefix(self, path: str) -> Endpoint | None:
        found = self._exact.get(path)
        if found is None:
            # "/v1/files/file-abc/content" -> "/v1/files/"
            end = path.find("/", path.find("/", 1) + 1)
            if end > 0:
                found = self._under.get(path[: end + 1])
        return found


SERVED = Registry(
    (
        chat_completions.ENDPOINT,
        embeddings.ENDPOINT,
        images.ENDPOINT,
        anthropic_messages.ENDPOINT,
        anthropic_count_tokens.ENDPOINT,
        moderations.ENDPOINT,
        completions.ENDPOINT,
        audio_speech.ENDPOINT,
        audio_transcriptions.ENDPOINT,
        audio_translations.ENDPOINT,
        responses.ENDPOINT,
        responses.STORED,
        models.ENDPOINT,
        files.ENDPOINT,
        files.BATCHES,
    )
)
by_path = SERVED.by_path
