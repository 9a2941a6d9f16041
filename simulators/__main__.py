"""`python -m simulators --kind openai --port 8001`: one simulated provider in the foreground.

Prints ``ready <kind> http://host:port`` once listening (``--port 0`` picks a free port and the
line tells which). SIGTERM and SIGINT stop it gracefully with exit status 0.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from types import FrameType

import uvicorn

from simulators.server import PROVIDERS, app
from simulators.transport import uvicorn_config


class _ReadyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, kind: str) -> None:
        super().__init__(config)
        self.kind = kind

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"ready {self.kind} http://{host}:{port}", flush=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal it caught after its graceful shutdown; end with status 0.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=sorted(PROVIDERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any non-empty key)")
    parser.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reject requests the real API would reject (default on)",
    )
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    application = app(
        args.kind, api_key=args.api_key, validate=args.validate, chunk_delay_ms=args.chunk_delay_ms
    )
    config = uvicorn_config(application, host=args.host, port=args.port, log_level=args.log_level)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    _ReadyServer(config, args.kind).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
