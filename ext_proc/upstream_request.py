"""The request half of translation: what one provider gets for the client's OpenAI request.

Shared by the listener's exchange (a model without fallbacks: one attempt, prepared
there) and by Envoy's upstream ext_proc filter (ext_proc/attempt.py: a fallback chain,
called once per attempt with the client's original body, so that each target is
translated for its own provider).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ext_proc import header_policy
from ext_proc.config import Model
from ext_proc.endpoints.base import Endpoint
from ext_proc.media_fetch import MediaPolicy, fetch_media
from ext_proc.translators import translator_for
from ext_proc.translators.base import FormTranslator, FormUpstream, Target


async def upstream_request(
    model: Model,
    endpoint: Endpoint,
    body: dict[str, Any],
    present: Collection[str],
    media: MediaPolicy,
) -> tuple[bytes, list[tuple[str, str]], list[str]]:
    """(body, headers to set, headers to remove) of the request to ``model``'s provider.

    ``present`` names the headers the request has now: whatever this provider's
    allow-list does not name is removed (the client's, and a previous attempt's:
    Envoy shares one header map between the attempts of a chain).
    ``media`` says which image/PDF URLs the gateway may fetch for the provider, and how many.
    The headers to set start with the body's length; the others depend on the target alone
    (the exchange sends them as one remembered preset: ``envoy_messages.fixed_preset``).
    """
    provider = model.provider
    translator = translator_for(endpoint, provider.kind)
    urls = translator.media_urls(body)
    fetched = (
        await fetch_media(urls, allowed_hosts=media.allowed_hosts, max_urls=media.max_urls) if urls else {}
    )
    upstream = translator.request(
        body, Target(provider.kind, provider.base_path, provider.api_key, model.upstream_model, fetched)
    )
    set_headers = [  # the content length first: the rest is the same on every request (see above)
        ("content-length", str(len(upstream.body))),
        (":path", upstream.path),
        (":authority", provider.host),
        *upstream.headers.items(),
    ]
    remove = header_policy.request_removals(provider.kind, present, {name for name, _ in set_headers})
    return upstream.body, set_headers, remove


def form_upstream(model: Model, endpoint: Endpoint, boundary: bytes) -> FormUpstream:
    """The request to ``model``'s provider of an upload (a form endpoint): its path and headers,
    and the writer of its body as the client's form passes (translators/base.py ``FormTranslator``)."""
    provider = model.provider
    translator = translator_for(endpoint, provider.kind)
    if not isinstance(translator, FormTranslator):
        raise TypeError(f"{type(translator).__name__} does not read forms")
    target = Target(provider.kind, provider.base_path, provider.api_key, model.upstream_model)
    return translator.form_request(target, boundary)
