"""ext_proc's cost per request as the prompt grows, in process: ``python -m bench.body_sizes``.

One non-streamed chat per request, the prompt one user message of the given size, driven
through everything ext_proc runs for it but the socket: the HTTP/2 server
(:mod:`ext_proc.h2_grpc`, fed the bytes Envoy sends: its stream's HEADERS, then each
message in DATA frames, read in 256 KiB pieces as uvloop reads them), the protobuf
codec, the exchange and the OpenAI translator (the body is parsed, its model rewritten
and sent back to Envoy whole). Each message waits for the answer to the previous one,
as Envoy does. The provider's answer is the simulator's (a short echo), whatever the
prompt: only the request grows.

Per size it reports the CPU per request (``time.process_time``), the minor page faults
per request (``getrusage``: each fault is a page the kernel had to find and zero, the
cost of large buffers taken from and given back to the OS), and the peak resident
memory above what the process held before the request (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``), as a multiple of the body. Before that request the bench
builds its bytes (Envoy's, not ext_proc's) and trims glibc's heap (``malloc_trim``): memory
freed but still resident would otherwise be reused by the request and hide part of its peak.
The machine is shared: the best of ``--runs`` is kept for CPU, the worst for faults and memory.

The prompt (``--prompts``) is ``words`` (ASCII words: no character a JSON string must escape,
as in an image's base64 data), ``text`` (prose: newlines, quotes, tabs and accented Latin-1
letters, which JSON decoders unescape into scratch memory) or ``typographic`` (the same prose
with curly quotes and dashes: one character above U+00FF makes CPython store the whole string
at 2 bytes per character, so the parsed document alone is ~1.75x the body).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import resource
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hpack
import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from bench.exchange_cpu import COMPLETION, JSON_HEADERS, REQUEST_HEADERS, gateway_config
from bench.h2_micro import PREFACE, Sink, _frame, _request_headers
from ext_proc import malloc_tuning
from ext_proc.envoy_messages import Reply, Spliced
from ext_proc.exchange import Services
from ext_proc.h2_grpc import Method, Server
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.server import PROCESS, methods
from ext_proc.shared_state import MemoryState

SIZES = (1024, 100 * 1024, 1024 * 1024, 8 * 1024 * 1024, 16 * 1024 * 1024)
READ_SIZE = 256 * 1024  # what uvloop hands data_received at most per read
ENVOY_FRAME = 16 * 1024  # the DATA frame size Envoy's codec sends (HTTP/2's default maximum)
_STATUS = Path("/proc/self/status")
REPO = Path(__file__).resolve().parent.parent
_CLEAR_REFS = Path("/proc/self/clear_refs")


# One paragraph of each prose prompt, repeated: every character JSON escapes (newline, tab,
# quote, backslash) and, for ``typographic``, the curly quotes and dashes of edited text.
_TEXT = (
    'The caf\u00e9 on the corner said "closed" again.\n'
    "Na\u00efve questions\tget naive answers; see C:\\notes\\menu.txt"
    " for the cr\u00e8me br\u00fbl\u00e9e.\n\n"
)
_TYPOGRAPHIC = _TEXT + "It\u2019s \u201cfine\u201d \u2014 really.\n"
PROMPTS = {"words": "lorem ipsum dolor sit amet ", "text": _TEXT, "typographic": _TYPOGRAPHIC}


def chat_body(size: int, prompt: str = "words") -> bytes:
    """An OpenAI chat request of ``size`` bytes (to a few bytes): one user message of ``prompt``
    (:data:`PROMPTS`) repeated."""

    def body(chars: int) -> bytes:
        return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text[:chars]}]})

    unit = PROMPTS[prompt]
    text = unit * (size // len(unit) + 1)  # at least as many characters as bytes: long enough
    low, high = 1, len(text)  # the most characters whose request fits in ``size``
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(body(mid)) <= size else (low, mid - 1)
    out = body(low)
    assert size - len(out) <= 8, (len(out), size)  # a character is at most 6 bytes escaped
    return out


def _message(request: ep.ProcessingRequest) -> bytes:
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _data_frames(stream_id: int, message: bytes, end: bool, frame_size: int) -> bytes:
    out = bytearray()
    view = memoryview(message)
    for start in range(0, len(message), frame_size):
        last = start + frame_size >= len(message)
        out += _frame(0x0, 0x1 if end and last else 0, stream_id, bytes(view[start : start + frame_size]))
    return bytes(out)


@dataclass(frozen=True)
class SizeResult:
    size: int
    requests: int
    cpu_ms: float  # per request
    minor_faults: float  # per request
    peak_mb: float  # the most one request added to the resident set

    @property
    def us_per_kb(self) -> float:
        return self.cpu_ms * 1000 / (self.size / 1024)

    @property
    def peak_per_body(self) -> float:
        return self.peak_mb * 1024 * 1024 / self.size


def _rss_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise KeyError(field)


def _trim() -> None:
    """Free heap memory back to the kernel (glibc's ``malloc_trim``), so that the peak measured
    next is what the request needs: memory the bench freed while building its request (the
    body, its protobuf, its frames) would otherwise stay resident, be reused by the request,
    and hide that much of its peak."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class Driver:
    """One ext_proc connection in process, and the bytes Envoy sends it for one request."""

    def __init__(self, size: int, frame_size: int, prompt: str = "words") -> None:
        state = MemoryState(prefix="b")
        config = gateway_config()
        services = Services(lambda record: None, Limiter(state), Idempotency(state))
        self.replies = 0
        self.body_reply = 0  # the size of the last request-body reply (a correctness check)
        process = methods(lambda: config, services)[PROCESS]

        def serialize(response: Reply) -> bytes | list[bytes]:
            self.replies += 1
            data = process.serialize(response)
            if isinstance(response, Spliced) or response.HasField("request_body"):
                self.body_reply = len(data) if isinstance(data, bytes) else sum(len(p) for p in data)
            return data

        server = Server(
            {
                PROCESS: Method(
                    process.handler,
                    process.deserialize,
                    serialize,
                    deserialize_large=process.deserialize_large,
                )
            }
        )
        connection: Any = server._connection(None)
        self.connection = connection
        self.sink = Sink()
        connection.connection_made(self.sink)
        self.encoder = hpack.Encoder()
        self.frame_size = frame_size
        self.next_id = 1
        # Envoy's SETTINGS (its windows for our replies are 16 MiB: envoy/bootstrap.yaml) and its
        # ACK of ours: from then on the stream windows are ours (one message each).
        settings = struct.pack(">HI", 0x4, 16 * 1024 * 1024)
        self.connection.data_received(
            PREFACE
            + _frame(0x4, 0, 0, settings)
            + _frame(0x4, 0x1, 0)
            + _frame(0x8, 0, 0, struct.pack(">I", 16 * 1024 * 1024 - 65_535))
        )
        body = ep.ProcessingRequest()
        body.request_body.body = chat_body(size, prompt)
        body.request_body.end_of_stream = True
        self.messages = [
            _message(ep.ProcessingRequest(request_headers=REQUEST_HEADERS)),
            _message(body),
            _message(ep.ProcessingRequest(response_headers=JSON_HEADERS)),
            _message(ep.ProcessingRequest(response_body=COMPLETION)),
        ]

    def request_bytes(self) -> tuple[int, list[bytes]]:
        """One request's stream id and bytes, message by message (each one's frames)."""
        sid, self.next_id = self.next_id, self.next_id + 2
        out = []
        for i, message in enumerate(self.messages):
            frames = _data_frames(sid, message, i == len(self.messages) - 1, self.frame_size)
            if i == 0:
                frames = _frame(0x1, 0x4, sid, _request_headers(self.encoder)) + frames
            out.append(frames)
        return sid, out

    async def one(self, request: tuple[int, list[bytes]]) -> None:
        feed = self.connection.data_received
        sid, reads = request
        for data in reads:
            expected = self.replies + 1
            for start in range(0, len(data), READ_SIZE):
                feed(data[start : start + READ_SIZE])
            while self.replies < expected:
                await asyncio.sleep(0)
            await asyncio.sleep(0)  # the reply's flush
            # Envoy hands the windows back as it reads our replies.
            if self.sink.written:
                increment = struct.pack(">I", self.sink.written)
                feed(_frame(0x8, 0, 0, increment) + _frame(0x8, 0, sid, increment))
                self.sink.written = 0
        while self.connection._streams:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the last flush


async def measure(
    size: int, requests: int, frame_size: int = ENVOY_FRAME, prompt: str = "words"
) -> SizeResult:
    """In a fresh process: the first request of ``size`` gives the peak (what it took beyond what
    the process held after a 1 KB request); the next ``requests`` the CPU and faults per request."""
    small = Driver(1024, frame_size)
    await small.one(small.request_bytes())  # imports, caches, the loop: what any request leaves
    driver = Driver(size, frame_size, prompt)
    first = driver.request_bytes()  # Envoy's bytes: made before, they are not ext_proc's memory
    gc.collect()
    _trim()
    before_kb = _rss_kb("VmRSS:")
    _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
    await driver.one(first)
    del first
    peak_kb = _rss_kb("VmHWM:") - before_kb
    if driver.body_reply < size - 8:
        raise AssertionError(f"the request body came back {driver.body_reply} bytes for {size}")
    reads = [driver.request_bytes() for _ in range(requests)]
    gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.process_time()
    for each in reads:
        await driver.one(each)
    cpu = time.process_time() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - usage.ru_minflt
    return SizeResult(size, requests, cpu / requests * 1e3, faults / requests, peak_kb / 1024)


def best(results: list[SizeResult]) -> SizeResult:
    """The least disturbed CPU, the worst faults and memory of several runs of one size."""
    return SizeResult(
        results[0].size,
        results[0].requests,
        min(r.cpu_ms for r in results),
        max(r.minor_faults for r in results),
        max(r.peak_mb for r in results),
    )


def _label(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def run_size(size: int, requests: int, frame_size: int, malloc: bool, prompt: str = "words") -> SizeResult:
    """One size in a fresh interpreter: the heap, its thresholds and the peak are its own."""
    argv = [sys.executable, "-m", "bench.body_sizes", "--child", str(size), "--requests", str(requests)]
    argv += ["--prompts", prompt]
    argv += ["--frame-size", str(frame_size), "--malloc-tuning" if malloc else "--no-malloc-tuning"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    return SizeResult(**orjson.loads(done.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.body_sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="body sizes in bytes")
    parser.add_argument("--requests", type=int, default=0, help="per size and run (default: by size)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--prompts", default=",".join(PROMPTS), help=f"which prompts, comma-separated ({', '.join(PROMPTS)})"
    )
    parser.add_argument("--frame-size", type=int, default=ENVOY_FRAME, help="DATA frame size Envoy sends")
    parser.add_argument(
        "--malloc-tuning",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="apply ext_proc's malloc thresholds, as ext_proc does at start (ext_proc/malloc_tuning.py)",
    )
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    prompts = args.prompts.split(",")
    for prompt in prompts:
        if prompt not in PROMPTS:
            parser.error(f"unknown prompt {prompt!r}: one of {', '.join(PROMPTS)}")
    if args.child:
        if args.malloc_tuning:
            malloc_tuning.keep_large_buffers()
        import uvloop

        result = uvloop.run(measure(args.child, args.requests, args.frame_size, prompts[0]))
        print(orjson.dumps(dataclasses.asdict(result)).decode())
        return
    head = f"{'prompt':>11} {'size':>7} {'CPU ms':>8} {'us/KB':>7} {'minor faults':>13} {'peak MB':>8}"
    print(f"{head} {'peak/body':>9}")
    for prompt in prompts:
        for size in (int(s) for s in args.sizes.split(",")):
            n = args.requests or max(5, min(2000, (64 * 1024 * 1024) // size))
            runs = [run_size(size, n, args.frame_size, args.malloc_tuning, prompt) for _ in range(args.runs)]
            r = best(runs)
            print(
                f"{prompt:>11} {_label(size):>7} {r.cpu_ms:8.3f} {r.us_per_kb:7.2f} {r.minor_faults:13.0f}"
                f" {r.peak_mb:8.1f} {r.peak_per_body:9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
