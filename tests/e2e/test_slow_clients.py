"""The listener resists slow and greedy clients, and still serves answers that take long.

A client trickling its headers or its body, or sitting on a connection without a
request, is cut after the configured timeout; connections beyond the replica's
limit are refused; an HTTP/2 connection gets a bounded number of streams. None of
it cuts a provider that takes long to answer or streams for long.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import httpx
import openai
import orjson
import pytest
from h2.settings import SettingCodes

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

HI = [{"role": "user", "content": "hello"}]
HEADERS_TIMEOUT_S = 1
RECEIVE_TIMEOUT_S = 2
IDLE_TIMEOUT_S = 2
STREAMS_PER_CONNECTION = 3
# Generous: the timeouts above are 1-2 s; today's listener kept such clients for an hour.
CUT_WITHIN_S = 8


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_gateway(
        tmp_path_factory.mktemp("strict"),
        INFERY_REQUEST_HEADERS_TIMEOUT_S=str(HEADERS_TIMEOUT_S),
        INFERY_REQUEST_RECEIVE_TIMEOUT_S=str(RECEIVE_TIMEOUT_S),
        INFERY_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
        INFERY_MAX_STREAMS_PER_CONNECTION=str(STREAMS_PER_CONNECTION),
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def strict_tenant(strict_gateway: Stack, openai_sim: SimulatorProcess) -> Tenant:
    admin = Admin(strict_gateway.admin_url)
    admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
    admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
    return new_tenant(admin, strict_gateway, "strict")


def _connect(stack: Stack) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.ports.listen), timeout=CUT_WITHIN_S + 5)
    return sock


def _served_connection(stack: Stack, tenant: Tenant) -> socket.socket:
    """A connection Envoy has accepted (it answered a request on it), kept open."""
    sock = _connect(stack)
    sock.sendall(
        f"GET /v1/models HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {tenant.key}\r\n\r\n".encode()
    )
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    return sock


def _http_body(head_and_body: bytes) -> bytes:
    """The body of an HTTP/1.1 response after its status line: chunked (the gateway's replies
    pass through ext_proc, which may change their length) or not."""
    head, _, body = head_and_body.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            return out
        out, body = out + body[:size], body[size + 2 :]


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Sends ``trickle`` one byte every 0.25 s (nothing if empty) and reads until the
    gateway closes the connection: (closed within ``seconds``, what it sent back)."""
    deadline = time.monotonic() + seconds
    received = b""
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return True, received
            sent += 1
        sock.settimeout(0.25)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


def test_a_client_trickling_its_headers_is_cut(strict_gateway: Stack):
    """Slowloris: several connections each sending a header byte at a time, never finishing."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-padding: " + b"a" * 200
    socks = [_connect(strict_gateway) for _ in range(5)]
    try:
        for sock in socks[1:]:
            sock.sendall(head[:1])
        closed, _ = _closed_within(socks[0], CUT_WITHIN_S, head)
        assert closed, "a client trickling its headers kept its connection"
        for sock in socks[1:]:
            assert _closed_within(sock, 1)[0], "a half-sent request head kept its connection"
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_without_a_request_is_closed(strict_gateway: Stack):
    sock = _connect(strict_gateway)
    try:
        assert _closed_within(sock, CUT_WITHIN_S)[0], "an idle connection stayed open"
    finally:
        sock.close()


def test_a_client_trickling_its_body_gets_408_request_timeout(strict_gateway: Stack, strict_tenant: Tenant):
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": HI}) + b" " * 100
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {strict_tenant.key}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    sock = _connect(strict_gateway)
    try:
        sock.sendall(head + body[:10])
        closed, reply = _closed_within(sock, CUT_WITHIN_S, body[10:])
        assert closed, "a client trickling its body kept its connection"
        status_line, _, rest = reply.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), reply[:300]
        error = orjson.loads(_http_body(rest))["error"]
        assert error["code"] == "request_timeout"
    finally:
        sock.close()


def test_slow_answers_are_never_cut_by_the_request_timeouts(
    strict_gateway: Stack, strict_tenant: Tenant, openai_sim: SimulatorProcess
):
    """The receive timeout stops counting once the request is in: a provider may take
    longer than it to answer, or stream for longer than it."""
    client = strict_tenant.client(strict_gateway, timeout=30)
    openai_sim.script([{"action": "hang", "seconds": RECEIVE_TIMEOUT_S + 1.5}])
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert reply.choices[0].message.content
    openai_sim.script([{"chunk_delay_ms": 600}])
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    assert time.monotonic() - started > RECEIVE_TIMEOUT_S + 1  # it did stream for long
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].model_extra["credits_used"] > 0


def test_an_http2_connection_gets_a_bounded_number_of_streams(strict_gateway: Stack, strict_tenant: Tenant):
    sock = _connect(strict_gateway)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        settings: dict[int, int] = {}
        while not settings:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    settings = {k: v.new_value for k, v in event.changed_settings.items()}
        assert settings[SettingCodes.MAX_CONCURRENT_STREAMS] == STREAMS_PER_CONNECTION
        assert settings[SettingCodes.INITIAL_WINDOW_SIZE] <= 1 << 20
    finally:
        sock.close()
    # The SDK over HTTP/2 is served as before.
    with httpx.Client(http1=False, http2=True) as http:  # prior knowledge: cleartext
        client = openai.OpenAI(
            base_url=strict_gateway.base_url, api_key=strict_tenant.key, http_client=http, max_retries=0
        )
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        assert raw.http_response.http_version == "HTTP/2"
        assert raw.parse().choices[0].message.content


def test_connections_beyond_the_limit_are_refused(tmp_path, openai_sim: SimulatorProcess):
    limit = 4
    stack = start_gateway(tmp_path, INFERY_MAX_CONNECTIONS=str(limit))
    held: list[socket.socket] = []
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        tenant = new_tenant(admin, stack, "greedy")

        def one_request() -> bool:
            with httpx.Client(timeout=10) as http:  # a new connection each time
                response = http.post(
                    f"{stack.base_url}/chat/completions",
                    headers={"authorization": f"Bearer {tenant.key}"},
                    json={"model": "gpt-4o-mini", "messages": HI},
                )
                return response.status_code == 200

        assert one_request()
        held = [_served_connection(stack, tenant) for _ in range(limit)]
        with pytest.raises(httpx.TransportError):
            one_request()
        # The connection beyond the limit is closed at once, not left waiting.
        extra = _connect(stack)
        try:
            assert _closed_within(extra, 2)[0]
        finally:
            extra.close()
        held.pop().close()
        assert eventually(one_request)
    finally:
        for sock in held:
            sock.close()
        stack.stop()
