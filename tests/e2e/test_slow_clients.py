"""The listener resists slow and greedy clients, and still serves answers that take long.

A client trickling its headers or its body, or sitting on a connection without a
request, is cut after the configured timeout; connections beyond the replica's
limit are refused; an HTTP/2 connection gets a bounded number of streams. A client
that stops reading its answer holds a bounded buffer for a bounded time, and is
charged for what it was served. None of it cuts a provider that takes long to answer
or streams for long, nor a client that reads slowly.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import openai
import orjson
import pytest
from h2.settings import SettingCodes

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import (
    SIM_KEY,
    Admin,
    Tenant,
    eventually,
    new_tenant,
    start_gateway,
)

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


# ------------------------------------------------------------ clients that stop reading

SEND_TIMEOUT_S = 2
CONNECTION_BUFFER = 128 * 1024
# Well past the kernel's socket buffers (a few MiB on loopback): the rest waits in Envoy.
LONG_STREAM = 8 * 1024 * 1024
BIG_ANSWER = 900_000  # a non-streamed answer under the gateway's buffer limit (support.py)


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory, openai_sim: SimulatorProcess) -> Iterator[Stalling]:
    stack = start_gateway(
        tmp_path_factory.mktemp("stalling"),
        INFERY_CLIENT_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
        INFERY_CONNECTION_BUFFER_BYTES=str(CONNECTION_BUFFER),
    )
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        yield Stalling(stack, admin, new_tenant(admin, stack, "stalling"), openai_sim)
    finally:
        stack.stop()


class Stalling:
    """A gateway whose clients get SEND_TIMEOUT_S to take what it sends, and its provider."""

    def __init__(self, stack: Stack, admin: Admin, tenant: Tenant, sim: SimulatorProcess) -> None:
        self.stack, self.admin, self.tenant, self.sim = stack, admin, tenant, sim

    def stat(self, name: str) -> int:
        """One of Envoy's counters or gauges, by its full name."""
        pattern = "^" + name.replace(".", "\\.") + "$"
        for line in self.stack.envoy_admin("/stats", filter=pattern).text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise AssertionError(f"Envoy has no stat {name}")

    def open_request(self, body: dict, step: dict, receive_buffer: int = 4096) -> tuple[socket.socket, str]:
        """Sends a request as a client that then stops reading: a small receive buffer, the
        response head read (for its request id), nothing more. The provider is scripted with
        ``step`` for exactly this request."""
        served = len(self.sim.requests())
        self.sim.script([step])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", self.stack.ports.listen))
        payload = orjson.dumps(body)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {self.tenant.key}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        eventually(lambda: len(self.sim.requests()) > served)  # the step went to this request
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(512)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        request_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-request-id:")
        )
        return sock, request_id

    def record(self, request_id: str) -> dict:
        return eventually(lambda: self.admin.usage_record(request_id), timeout=10)


def test_a_client_that_stops_reading_holds_a_bounded_buffer_for_a_bounded_time_and_is_charged(
    stalling: Stalling,
) -> None:
    """Answers and streams to clients that read nothing: Envoy keeps at most about its
    per-connection buffer for each (not the answer, not the stream), closes each connection
    SEND_TIMEOUT_S after the client stopped taking bytes (it kept them for the stream idle
    timeout, 600 s, before), frees the buffers, and the usage records charge what was served."""
    baseline = stalling.stat("server.memory_allocated")
    ask = {"model": "gpt-4o-mini", "messages": HI}
    held: list[tuple[socket.socket, str, bool]] = []
    try:
        for stream in (False, True, False, True):
            # Paced as a fast provider writes (8 MB/s), not faster than ext_proc reads.
            step = {"answer_bytes": LONG_STREAM if stream else BIG_ANSWER, "chunk_delay_ms": 2}
            sock, request_id = stalling.open_request({**ask, "stream": stream}, step)
            held.append((sock, request_id, stream))
        peak_allocated = peak_buffered = 0
        started = time.monotonic()
        while stalling.stat("http.infery.downstream_cx_active") and time.monotonic() - started < 60:
            peak_allocated = max(peak_allocated, stalling.stat("server.memory_allocated") - baseline)
            peak_buffered = max(peak_buffered, stalling.stat("http.infery.downstream_cx_tx_bytes_buffered"))
            time.sleep(0.1)
        waited = time.monotonic() - started
        assert stalling.stat("http.infery.downstream_cx_active") == 0, "clients that read nothing kept Envoy"
        # Each went SEND_TIMEOUT_S after its own stream had filled the socket buffers.
        assert waited < 30, f"the stalled connections went after {waited:.1f} s"
        assert stalling.stat("http.infery.downstream_cx_tx_bytes_buffered") == 0
        # About the per-connection buffer each, waiting for the client, plus what was on its way
        # from the provider; never the answers' or the streams' sizes.
        clients = len(held)
        assert 0 < peak_buffered <= clients * 2 * CONNECTION_BUFFER, f"{peak_buffered} bytes waited"
        assert peak_allocated < clients * 4 * CONNECTION_BUFFER, f"Envoy's heap grew {peak_allocated}"
    finally:
        for sock, _, _ in held:
            sock.close()
    for _, request_id, stream in held:
        record = stalling.record(request_id)
        assert Decimal(record["credits"]) > 0, record
        if stream:  # cut short: charged for the chunks sent towards the client
            assert record["status"] == 499 and record["error_code"] == "stream_interrupted", record
            assert record["usage_estimated"] is True and record["output_tokens"] > 0
        else:  # the whole answer was handed to Envoy for the client: charged as the provider counted
            assert record["status"] == 200 and not record["error_code"], record
            assert record["usage_estimated"] is False


def test_a_client_that_reads_slowly_gets_the_whole_stream(stalling: Stalling) -> None:
    """Taking bytes slowly is not stopping: the send timeout counts from the last byte the client
    took, so a stream that takes several times SEND_TIMEOUT_S to read arrives whole."""
    ask = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    sock, request_id = stalling.open_request(ask, {"answer_bytes": LONG_STREAM}, receive_buffer=64 * 1024)
    received = b""
    started = time.monotonic()
    try:
        while not received.endswith(b"0\r\n\r\n"):  # the chunked body's end
            time.sleep(0.02)
            chunk = sock.recv(32 * 1024)
            assert chunk, "the gateway cut a client that was reading"
            received += chunk
    finally:
        sock.close()
    assert time.monotonic() - started > 2 * SEND_TIMEOUT_S  # it did read slowly
    assert b"data: [DONE]" in received and len(received) > LONG_STREAM
    record = stalling.record(request_id)
    assert record["status"] == 200 and not record["error_code"] and Decimal(record["credits"]) > 0


def _h2_request(stack: Stack, tenant: Tenant, body: dict) -> tuple[socket.socket, h2.connection.H2Connection]:
    """An HTTP/2 request from a client that grants no flow-control window: Envoy may send it
    headers, never a byte of body."""
    sock = socket.create_connection(("127.0.0.1", stack.ports.listen), timeout=30)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 0}
    )
    conn.initiate_connection()
    payload = orjson.dumps(body)
    stream_id = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        (":scheme", "http"),
        ("authorization", f"Bearer {tenant.key}"),
        ("content-type", "application/json"),
        ("content-length", str(len(payload))),
    ]
    conn.send_headers(stream_id, headers)
    conn.send_data(stream_id, payload, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock, conn


def _h2_events_until(
    sock: socket.socket, conn: h2.connection.H2Connection, kind: type, seconds: float
) -> list[h2.events.Event]:
    """The connection's events (answering pings and settings, granting nothing) until one of
    ``kind`` arrives or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    events: list[h2.events.Event] = []
    while time.monotonic() < deadline and not any(isinstance(e, kind) for e in events):
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        events += conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    return events


def test_an_http2_client_that_opens_no_window_for_an_answer_is_reset_and_charged(stalling: Stalling) -> None:
    """HTTP/2 reads the connection but not the stream: the answer waits in Envoy's codec,
    for SEND_TIMEOUT_S (stream_flush_timeout; it waited for the stream idle timeout before)."""
    served = len(stalling.sim.requests())
    stalling.sim.script([{"answer_bytes": BIG_ANSWER}])
    sock, conn = _h2_request(stalling.stack, stalling.tenant, {"model": "gpt-4o-mini", "messages": HI})
    try:
        events = _h2_events_until(sock, conn, h2.events.StreamReset, 10 * SEND_TIMEOUT_S)
    finally:
        sock.close()
    assert len(stalling.sim.requests()) > served
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers)[b":status"] == b"200"
    assert any(isinstance(e, h2.events.StreamReset) for e in events), "the stalled answer was kept"
    assert not any(isinstance(e, h2.events.DataReceived) for e in events)
    request_id = dict(response.headers)[b"x-request-id"].decode()
    record = stalling.record(request_id)  # handed whole to Envoy for the client: charged
    assert record["status"] == 200 and Decimal(record["credits"]) > 0


def test_under_memory_pressure_envoy_resets_the_streams_holding_the_most(
    tmp_path: Path, openai_sim: SimulatorProcess
) -> None:
    """The backstop for what the send timeout does not see, an HTTP/2 client that starves one
    stream of window while the provider streams (it would wait for the stream idle timeout):
    with the heap near INFERY_ENVOY_MAX_HEAP_BYTES, Envoy's overload manager resets the streams
    buffering the most, the usage records charge what was sent, and new requests are served."""
    stack = start_gateway(tmp_path, INFERY_ENVOY_MAX_HEAP_BYTES=str(32 * 1024 * 1024))
    starved: list[tuple[socket.socket, h2.connection.H2Connection]] = []
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        tenant = new_tenant(admin, stack, "pressure")
        envoy = Stalling(stack, admin, tenant, openai_sim)
        ask = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
        while not envoy.stat("envoy.overload_actions.reset_high_memory_stream.count"):
            assert len(starved) < 40, f"no reset at {envoy.stat('server.memory_allocated')} bytes"
            openai_sim.script([{"answer_bytes": 16 * 1024 * 1024}])
            starved.append(_h2_request(stack, tenant, ask))
            time.sleep(0.5)
        reset = []
        for sock, conn in starved:
            events = _h2_events_until(sock, conn, h2.events.StreamReset, 5)
            if any(isinstance(e, h2.events.StreamReset) for e in events):
                response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
                reset.append(dict(response.headers)[b"x-request-id"].decode())
        assert reset, "Envoy counted resets the clients never saw"
        for request_id in reset:
            record = eventually(lambda rid=request_id: admin.usage_record(rid), timeout=10)
            assert record["status"] == 499 and record["error_code"] == "stream_interrupted", record
            assert Decimal(record["credits"]) > 0
        for sock, _ in starved:
            sock.close()
        starved.clear()
        assert eventually(lambda: tenant.client(stack).models.list().data, timeout=10)
    finally:
        for sock, _ in starved:
            sock.close()
        stack.stop()
