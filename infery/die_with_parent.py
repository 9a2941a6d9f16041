"""``python -I -S die_with_parent.py PARENT_PID PROGRAM ARGS...``: PROGRAM, getting SIGTERM when
the process PARENT_PID (the launcher, infery/stack.py) dies, even by SIGKILL (Linux).

Why a program of its own and not ``subprocess.Popen(preexec_fn=...)``: a ``preexec_fn`` makes
Python ``fork`` a copy of the launcher and run code in it, and ``fork`` runs every library's fork
handlers in the copy. The launcher's gRPC (its health probes; the tests' OTLP collector) restarts
its threads there; the copy then closes its descriptors before ``exec`` and a restarted poller
aborts it ("epoll_wait error: Bad file descriptor"), or gRPC's handler hangs the launcher. Without
a ``preexec_fn`` Python ``vfork``s straight into ``exec``: no handler, no code in a copy. This
process sets the signal and ``exec``s PROGRAM in its place (same pid, the signal kept).

Run with ``-I -S`` by its path: the standard library only, about 10 ms.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main(argv: list[str]) -> None:
    parent, program = int(argv[0]), argv[1:]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: Stack.stop() still cleans up
        pass
    else:
        if os.getppid() != parent:  # the launcher died before the signal was set
            os.kill(os.getpid(), signal.SIGTERM)
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"die_with_parent: cannot run {program[0]}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
