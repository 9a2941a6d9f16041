"""OpenAI transcriptions and translations ⇄ the OpenAI wire format: the client's form passed
through as it arrives, ``model`` rewritten to the provider's name; the answer as the provider
wrote it, in the format the client asked for.

The form is written again part by part (:class:`PassthroughForm`): each part's delimiter and
header lines as received, its bytes as they come, except the ``model`` part's value, which
becomes the target's upstream model. Nothing else changes, so a field this gateway does not
know reaches the provider too.

The answer is JSON for ``json`` and ``verbose_json`` (passed through; no ``model`` field to
rewrite), plain text for ``text``, ``srt`` and ``vtt`` (passed through, with the provider's
content type). The duration charged is the provider's: ``usage.seconds`` of a duration usage
(whisper-1), else ``duration`` (verbose_json); a token usage (gpt-4o-transcribe) and the text
formats give none, and the endpoint falls back to the gateway's measure (endpoints/
audio_transcriptions.py). xAI's API has no audio endpoints: ``400 unsupported_endpoint``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import GatewayError
from ..form_stream import PartHead, closing, part_header, part_trailer
from . import provider_errors
from . import usage as provider_usage
from .audio_speech_openai import refuse_kind
from .base import FormTranslator, FormUpstream, ResponseContext, Target, TranslatedResponse
from .openai_api import error_response
from .provider_errors import failed
from .sse import SSEBuffer

JSON_FORMATS = ("json", "verbose_json")


class PassthroughForm:
    """The client's form again, with the model field's value replaced. A FormWriter."""

    __slots__ = ("_boundary", "_in_model", "_model", "_out")

    def __init__(self, boundary: bytes, model: str) -> None:
        encoded = model.encode()
        if boundary in encoded or b"\r" in encoded or b"\n" in encoded:
            raise GatewayError(500, "internal_error", "The model's upstream name cannot be sent in a form.")
        self._boundary = boundary
        self._model = encoded
        self._in_model = False
        self._out: list[bytes] = []

    def part(self, head: PartHead) -> None:
        self._in_model = head.name == "model" and head.filename is None
        self._out.append(part_header(self._boundary, head))

    def data(self, chunk: bytes) -> None:
        if not self._in_model:
            self._out.append(chunk)

    def part_end(self) -> None:
        if self._in_model:
            self._out.append(self._model)
            self._in_model = False
        self._out.append(part_trailer())

    def end(self) -> None:
        self._out.append(closing(self._boundary))

    def take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out


class TranscriptionsOpenAI(FormTranslator):
    __slots__ = ()

    endpoint = "audio_transcriptions"
    wire_format = "openai"
    path = "/audio/transcriptions"
    client_path = "/v1/audio/transcriptions"

    def form_request(self, target: Target, boundary: bytes) -> FormUpstream:
        refuse_kind(target, self.client_path)
        return FormUpstream(
            path=target.base_path + self.path,
            headers={
                "authorization": "Bearer " + target.api_key,
                "content-type": "multipart/form-data; boundary=" + boundary.decode("latin-1"),
            },
            writer=PassthroughForm(boundary, target.upstream_model),
        )

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        if status >= 400:
            return error_response(status, body)
        if body.startswith((b"data:", b"event:")):
            return stream_answer(body)
        if ctx.request.get("response_format", "json") not in JSON_FORMATS:
            return TranslatedResponse(status, body, None)  # text, srt, vtt: the transcript as is
        try:
            doc: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return failed(502, "upstream_error", "upstream returned a body that is not JSON")
        if not isinstance(doc, dict):
            return failed(502, "upstream_error", "upstream returned a body that is not a JSON object")
        return TranslatedResponse(status, body, provider_usage.openai_transcription(doc))


def stream_answer(body: bytes) -> TranslatedResponse:
    """A streamed transcription (``stream: true``, gpt-4o-transcribe), read whole: passed on as
    it came, its usage read from the ``transcript.text.done`` event (a token usage: the
    endpoint charges the gateway's measure of the file)."""
    usage = None
    reader = SSEBuffer(max_event_bytes=len(body) + 1)
    for event in [*reader.feed(body), *reader.flush()]:
        doc = provider_errors.json_or_none(event.data)
        if isinstance(doc, dict) and doc.get("type") == "transcript.text.done":
            usage = provider_usage.openai_transcription(doc)
    return TranslatedResponse(200, body, usage, content_type="text/event-stream")


class TranslationsOpenAI(TranscriptionsOpenAI):
    __slots__ = ()

    endpoint = "audio_translations"
    path = "/audio/translations"
    client_path = "/v1/audio/translations"


TRANSLATOR = TranscriptionsOpenAI()
TRANSLATIONS = TranslationsOpenAI()
