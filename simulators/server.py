"""One simulated provider as a Starlette app: its API, scripted faults, and the `/_sim/` control API.

Order of work for an API request: log it, check the key (as the real API does first), take the
next scripted step (hang / reset / replay / status replace the answer), then validate and answer.
A request rejected for its key consumes no step.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators import conformance, content, forms
from simulators.anthropic_api import ERRORS as ANTHROPIC_ERRORS
from simulators.anthropic_api import Anthropic
from simulators.control import RequestLog, Script, Step, StepError
from simulators.google_api import Google
from simulators.openai_api import OpenAI
from simulators.provider import ApiError, Call, Handler, Provider
from simulators.replies import (
    JsonReply,
    RawReply,
    Reply,
    Reset,
    Silent,
    render,
    wait_disconnect,
    without_usage,
)

PROVIDERS: dict[str, type[Provider]] = {"openai": OpenAI, "anthropic": Anthropic, "google": Google}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_SSE_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)")


class Simulator:
    def __init__(self, provider: Provider, *, chunk_delay_ms: float, fixtures: Path | None) -> None:
        self.provider = provider
        self.chunk_delay_ms = chunk_delay_ms
        self.fixtures = fixtures
        self.script = Script()
        self.log = RequestLog()

    # ---------------------------------------------------------------- API requests
    async def handle(self, request: Request, handler: Handler | None) -> Response:
        raw = await request.body()
        body: Any = None
        is_json = False
        if raw:
            with contextlib.suppress(orjson.JSONDecodeError):
                body, is_json = orjson.loads(raw), True
        # Straight from the ASGI scope: Starlette's URL/Headers objects cost more than the answer itself.
        scope = request.scope
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"))) if scope["query_string"] else {}
        path = scope["path"]
        logged: Any = body if is_json else raw.decode("utf-8", "replace")
        logged_bytes = len(raw)
        if headers.get("content-type", "").startswith("multipart/form-data"):
            # Uploads are logged as their fields and files' sizes, not their bytes.
            with contextlib.suppress(forms.FormProblem):
                logged, logged_bytes = forms.parse(headers["content-type"], raw).summary(), 0
        self.log.add(
            {"method": request.method, "path": path, "query": query, "headers": headers, "body": logged},
            logged_bytes,
        )
        call = Call(
            request.method,
            path,
            query,
            headers,
            body,
            is_json,
            request.path_params,
            f"{scope['scheme']}://{headers.get('host', 'localhost')}",
            raw=raw,
        )
        step: Step | None = None
        try:
            if handler is None:
                raise self.provider.not_found(call)
            self.provider.authenticate(call)
            step = call.step = self.script.pop()
            if step is not None:
                early = await self._scripted(request, step)
                if early is not None:
                    return early
            reply = handler(call)
        except ApiError as error:
            reply = self.provider.error_reply(error)
        return self._render(reply, step)

    async def _scripted(self, request: Request, step: Step) -> Response | None:
        if step.action == "hang":
            try:
                await asyncio.wait_for(wait_disconnect(request.receive), step.seconds)
                return Silent()
            except TimeoutError:
                pass
        if step.action == "reset":
            return Reset()
        if step.action == "replay":
            return self._render(self._replay(step), step)
        if step.action == "no_body":  # the status alone, Content-Length: 0 (a proxy's bare 502, say)
            return self._render(RawReply([b""], "application/json", step.status or 502), step)
        if step.answers_instead:
            assert step.status is not None
            reply = (
                self.provider.error_reply(ApiError(step.status))
                if step.body is None
                else JsonReply(step.body, step.status)
            )
            return self._render(reply, step)
        return None

    def _render(self, reply: Reply, step: Step | None) -> Response:
        action = step.action if step is not None else None
        if action == "no_usage":
            reply = without_usage(reply)
        delay_ms = self.chunk_delay_ms
        if step is not None and step.chunk_delay_ms is not None:
            delay_ms = step.chunk_delay_ms
        return render(
            reply,
            defaults=self.provider.response_headers(),
            scripted=step.headers if step is not None else {},
            delay_s=delay_ms / 1000,
            cut_after=step.after_chunks if step is not None and action in _CUTTING else None,
            endless=step.size if step is not None and action == "endless_event" else None,
        )

    def _replay(self, step: Step) -> Reply:
        """The fixture as recorded; a recorded exchange list replays its `index`-th response."""
        assert step.fixture is not None
        data = step.fixture.read_bytes()
        if step.fixture.suffix == ".sse":
            return RawReply(_sse_events(data), self.provider.sse_media_type, step.status or 200)
        doc = orjson.loads(data)
        if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "response" in doc[0]:
            response = doc[step.index]["response"]
            media_type = response.get("headers", {}).get("content-type", "application/json")
            recorded = response.get("body", "")
            if "event-stream" in media_type:
                events = _sse_events(str(recorded).encode())
            else:  # recorded as a Python repr of the JSON body
                value = ast.literal_eval(recorded) if isinstance(recorded, str) else recorded
                events = [orjson.dumps(value)]
            return RawReply(events, media_type, step.status or int(response.get("status_code", 200)))
        return RawReply([data], "application/json", step.status or _status_of(doc))

    # ---------------------------------------------------------------- control API
    async def post_script(self, request: Request) -> Response:
        try:
            raw = orjson.loads(await request.body())
            if not isinstance(raw, list):
                raise StepError("POST a JSON list of steps")
            steps = [Step.parse(s, self.fixtures) for s in raw]
        except (StepError, orjson.JSONDecodeError, TypeError, ValueError) as error:
            return Response(orjson.dumps({"error": str(error)}), 400, media_type="application/json")
        self.script.extend(steps)
        return _json({"pending": len(self.script)})

    async def get_script(self, request: Request) -> Response:
        return _json({"pending": len(self.script)})

    async def get_requests(self, request: Request) -> Response:
        return _json(self.log.entries())

    async def clear(self, request: Request) -> Response:
        self.log.clear()
        self.script.clear()
        return _json({"cleared": True})

    async def image(self, request: Request) -> Response:
        # ``?delay_s=``: a slow image host, for the gateway's media-fetch deadlines.
        delay = float(request.query_params.get("delay_s") or 0)
        if delay > 0:
            await asyncio.sleep(delay)
        return Response(content.png_for(request.path_params["token"]), media_type="image/png")

    async def health(self, request: Request) -> Response:
        return _json({"kind": self.provider.kind, "validate": self.provider.kit is not None})

    def routes(self) -> list[Route]:
        routes = [
            Route(e.path, self._endpoint(e.handler), methods=[e.method]) for e in self.provider.endpoints()
        ]
        routes += [
            Route("/_sim/script", self.post_script, methods=["POST"]),
            Route("/_sim/script", self.get_script, methods=["GET"]),
            Route("/_sim/requests", self.get_requests, methods=["GET"]),
            Route("/_sim/requests", self.clear, methods=["DELETE"]),
            Route("/_sim/images/{token}.png", self.image, methods=["GET"]),
            Route("/_sim/health", self.health, methods=["GET"]),
        ]
        routes.append(Route("/{path:path}", self._endpoint(None), methods=ALL_METHODS))
        return routes

    def _endpoint(self, handler: Handler | None) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self.handle(request, handler)

        return endpoint


_CUTTING = ("cut_stream", "endless_event")  # actions that stop the answer after `after_chunks` events


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def _sse_events(data: bytes) -> list[bytes]:
    return [event for event in _SSE_EVENT_END.split(data) if event]


def _status_of(doc: Any) -> int:
    """The HTTP status a recorded body was sent with, as far as the body tells."""
    if not isinstance(doc, dict):
        return 200
    if doc.get("type") == "error":
        kind = (doc.get("error") or {}).get("type")
        return next((status for status, (name, _) in ANTHROPIC_ERRORS.items() if name == kind), 400)
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return int(error["code"])
    return 400 if error else 200


def app(
    kind: str, *, api_key: str | None = None, validate: bool = True, chunk_delay_ms: float = 0.0
) -> Starlette:
    """A simulated `kind` provider ("openai" | "anthropic" | "google").

    `api_key` None accepts any non-empty key. With `validate`, requests the real API would reject
    get its 400 (checked with `simulators.conformance`, whose material ships inside the package).
    """
    if kind not in PROVIDERS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(PROVIDERS)}")
    kit = conformance.load_kit(kind) if validate else None
    provider = PROVIDERS[kind](kit=kit, api_key=api_key)
    simulator = Simulator(provider, chunk_delay_ms=chunk_delay_ms, fixtures=conformance.FIXTURES_DIR)
    application = Starlette(routes=simulator.routes())
    application.state.simulator = simulator
    return application
