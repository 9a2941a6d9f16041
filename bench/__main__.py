"""``python -m bench [--quick] [--duration S] ...``; see ``--help``."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from bench.run import run
from bench.settings import parse


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every `finally` stops what the bench started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(settings)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
