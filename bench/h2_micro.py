"""CPU per gRPC message through ext_proc's HTTP/2 server, in process: ``python -m bench.h2_micro``.

No socket and no event-loop I/O: the server's connection is fed the bytes Envoy would send
(prebuilt, so the client costs nothing) and writes into a sink. What is left is what
``ext_proc.h2_grpc`` itself spends: frame parsing, HPACK, flow control, the handler task,
framing the replies. Each stream is shaped like one non-streamed chat through Envoy: the
request HEADERS, then four messages, each answered before the next is sent (the last one
half-closes the stream), ``concurrency`` streams in lockstep on one connection.

The handler echoes its messages (identity (de)serialization), so the gateway's own logic
and protobuf are not counted. ``--rounds`` repeats the measurement and the best is
reported: the machine is shared, and the best run is the one least disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import hpack

from ext_proc.h2_grpc import Method, Server

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ECHO = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
MESSAGES_PER_STREAM = 4
_HEAD = struct.Struct(">I B I")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


class Sink:
    """The transport: counts what the server writes, and reads nothing back."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, pieces: list[bytes | memoryview]) -> None:
        self.written += sum(len(piece) for piece in pieces)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass(frozen=True)
class Result:
    streams: int
    messages: int
    cpu_s: float

    @property
    def us_per_message(self) -> float:
        return self.cpu_s / self.messages * 1e6


def _request_headers(encoder: hpack.Encoder) -> bytes:
    """Envoy's gRPC stream headers to ext_proc; after the first stream, indexed fields and literals."""
    return bytes(
        encoder.encode(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", ECHO.encode()),
                (b":authority", b"infery_ext_proc"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"x-envoy-internal", b"true"),
            ]
        )
    )


async def measure(streams: int, concurrency: int, message_size: int) -> Result:
    replies = 0

    async def echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        nonlocal replies
        async for message in requests:
            replies += 1
            yield message

    def identity(data: bytes) -> bytes:
        return data

    server = Server({ECHO: Method(echo, identity, identity)})  # type: ignore[arg-type]
    connection: Any = server._connection(None)
    sink = Sink()
    connection.connection_made(sink)
    encoder = hpack.Encoder()
    message = b"\x00" + message_size.to_bytes(4, "big") + bytes(message_size)
    # The client opens its windows fully: the server is never held back by flow control here.
    settings = struct.pack(">HI", 0x4, 2**31 - 1)
    connection.data_received(
        PREFACE + _frame(0x4, 0, 0, settings) + _frame(0x8, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535))
    )
    # Every round's bytes are built before the clock starts.
    batches: list[list[bytes]] = []
    next_id = 1
    for _ in range(0, streams, concurrency):
        ids = list(range(next_id, next_id + 2 * concurrency, 2))
        next_id += 2 * concurrency
        rounds = []
        for step in range(MESSAGES_PER_STREAM):
            data = bytearray()
            for sid in ids:
                if step == 0:
                    data += _frame(0x1, 0x4, sid, _request_headers(encoder))  # HEADERS, END_HEADERS
                last = step == MESSAGES_PER_STREAM - 1
                data += _frame(0x0, 0x1 if last else 0, sid, message)
            rounds.append(bytes(data))
        batches.append(rounds)
    # The sent bytes leave the connection window; a WINDOW_UPDATE gives them back each batch.
    refill = _frame(0x8, 0, 0, struct.pack(">I", concurrency * MESSAGES_PER_STREAM * len(message)))
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for rounds in batches:
        for chunk in rounds:
            expected = replies + concurrency
            connection.data_received(chunk)
            while replies < expected:
                await asyncio.sleep(0)
        connection.data_received(refill)
        while connection._streams:  # trailers out: every stream of the batch is done
            await asyncio.sleep(0)
    await asyncio.sleep(0)  # the last flush
    cpu = time.process_time() - started
    assert sink.written > 0 and loop.is_running()
    connection.connection_lost(None)
    count = len(batches) * concurrency
    return Result(count, count * MESSAGES_PER_STREAM, cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.h2_micro", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--message-size", type=int, default=1_000, help="bytes per request and reply")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    run = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    results = [run(measure(args.streams, args.concurrency, args.message_size)) for _ in range(args.rounds)]
    for result in results:
        print(f"{result.streams} streams, {result.messages} messages: {result.us_per_message:.2f} us/message")
    best = min(results, key=lambda r: r.us_per_message)
    print(f"best: {best.us_per_message:.2f} us of CPU per message (request in, reply out)")


if __name__ == "__main__":
    main()
