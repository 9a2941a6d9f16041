"""What one large request holds at each phase, in process: ``python -m bench.body_phases 8388608 text``.

The request of ``bench.body_sizes`` (its driver: the HTTP/2 server fed Envoy's bytes, protobuf,
the exchange, the OpenAI translator), with probes where each phase starts and ends: the live heap
(glibc's ``mallinfo2``: bytes in use, ``mmap``'d chunks counted whole, touched or not: orjson's
output is 8-16x the body's size there, ~1x of it resident), the resident set and its peak
so far (``VmRSS``, ``VmHWM``), each as a multiple of the body, above what the process held before
the request. Where the peak rises tells what is alive together (bench/README.md, session 9's byte
budget). The probes replace the phases' functions for the run (a measuring tool, not a benchmark:
its own reads of ``/proc`` cost a few allocations).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
from collections.abc import Callable
from typing import Any

import uvloop

import ext_proc.exchange as exchange
import ext_proc.h2_grpc.connection as connection
from bench import body_sizes
from ext_proc import malloc_tuning

# struct mallinfo2 (malloc.h), in order.
_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2.split(" ")]


class Probes:
    def __init__(self, size: int) -> None:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        self._mallinfo = libc.mallinfo2
        self.size = size
        self.rows: list[tuple[str, float, float, float]] = []
        self._base: tuple[int, int] | None = None

    def _live(self) -> int:
        info = self._mallinfo()
        return int(info.uordblks + info.hblkhd)

    def start(self) -> None:
        self._base = (self._live(), body_sizes._rss_kb("VmRSS:") * 1024)
        body_sizes._CLEAR_REFS.write_text("5")

    def __call__(self, label: str) -> None:
        if self._base is None:
            return
        live, rss = self._base
        now, peak = body_sizes._rss_kb("VmRSS:") * 1024, body_sizes._rss_kb("VmHWM:") * 1024
        self.rows.append(
            (label, (self._live() - live) / self.size, (now - rss) / self.size, (peak - rss) / self.size)
        )


def _around(probe: Probes, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def probed(*args: Any, **kwargs: Any) -> Any:
        probe(f"{label}: before")
        result = function(*args, **kwargs)
        probe(f"{label}: after")
        return result

    return probed


def _around_async(probe: Probes, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    async def probed(*args: Any, **kwargs: Any) -> Any:
        probe(f"{label}: before")
        result = await function(*args, **kwargs)
        probe(f"{label}: after")
        return result

    return probed


async def run(size: int, prompt: str) -> Probes:
    probe = Probes(size)
    parse, translate, take = exchange._parse_body, exchange.upstream_request, connection.Requests.__anext__
    exchange._parse_body = _around(probe, "JSON parse", parse)  # type: ignore[assignment]
    exchange.upstream_request = _around_async(probe, "translate", translate)  # type: ignore[assignment]
    connection.Requests.__anext__ = _around_async(probe, "next message", take)  # type: ignore[method-assign]
    try:
        small = body_sizes.Driver(1024, body_sizes.ENVOY_FRAME)
        await small.one(small.request_bytes())
        driver = body_sizes.Driver(size, body_sizes.ENVOY_FRAME, prompt)
        first = driver.request_bytes()
        gc.collect()
        body_sizes._trim()
        probe.start()
        await driver.one(first)
        probe("answered")
    finally:
        exchange._parse_body, exchange.upstream_request = parse, translate  # type: ignore[assignment]
        connection.Requests.__anext__ = take  # type: ignore[method-assign]
    return probe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.body_phases", description=__doc__.split("\n")[0])
    parser.add_argument("size", type=int, nargs="?", default=8 * 1024 * 1024)
    parser.add_argument("prompt", nargs="?", default="words", choices=tuple(body_sizes.PROMPTS))
    args = parser.parse_args(argv)
    malloc_tuning.keep_large_buffers()
    probe = uvloop.run(run(args.size, args.prompt))
    print(f"{args.prompt}, {args.size} bytes: multiples of the body above the process before the request")
    print(f"{'probe':28} {'live':>6} {'rss':>6} {'peak':>6}")
    for label, live, rss, peak in probe.rows:
        print(f"{label:28} {live:6.2f} {rss:6.2f} {peak:6.2f}")


if __name__ == "__main__":
    main()
