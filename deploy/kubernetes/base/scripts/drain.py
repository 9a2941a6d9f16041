"""preStop hooks of a gateway pod, so that a rollout or a scale-in never cuts a stream.

Kubernetes runs preStop while it removes the pod from the Service's endpoints, and
sends SIGTERM only when preStop returns. Envoy exits at once on SIGTERM, so the
waiting has to happen here:

    envoy     start Envoy's graceful drain (HTTP/1.1 answers get `Connection: close`,
              HTTP/2 connections a GOAWAY, yet new connections are still accepted while
              the endpoint removal propagates), wait --settle seconds, then until no
              client request is active.
    ext-proc  wait until Envoy has exited: every request still in flight needs ext_proc.

Both stop waiting after --max-wait seconds; terminationGracePeriodSeconds must be longer.
Envoy's admin is a Unix socket (mode 600) in a volume both containers mount: it is
never on TCP, where anything in the pod's network could stop Envoy or read its config.
Standard library only: it runs in the gateway image, mounted from a ConfigMap.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import time


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("envoy", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _admin(admin: str, method: str, path: str) -> str:
    """One admin request; OSError when Envoy is not there (http.client errors are OSErrors too)."""
    conn = _UnixHTTPConnection(admin, timeout=2)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise OSError(f"{method} {path}: HTTP {response.status}")
        return body
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()


def active_requests(admin: str) -> int:
    """Client requests Envoy is serving: every HTTP connection manager but the admin's own."""
    text = _admin(admin, "GET", "/stats?filter=downstream_rq_active$")
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("http.") and not name.startswith("http.admin."):
            total += int(value)
    return total


def drain_envoy(admin: str, settle_s: float, max_wait_s: float, poll_s: float = 1.0) -> str:
    deadline = time.monotonic() + max_wait_s
    try:
        _admin(admin, "POST", "/drain_listeners?graceful")
    except OSError:
        return "envoy is not running"
    time.sleep(min(settle_s, max_wait_s))
    while time.monotonic() < deadline:
        try:
            if active_requests(admin) == 0:
                return "no active requests"
        except OSError:
            return "envoy exited"
        time.sleep(poll_s)
    return "max wait reached"


def wait_for_exit(admin: str, max_wait_s: float, poll_s: float = 1.0) -> str:
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1)
                probe.connect(admin)
        except OSError:
            return "envoy exited"
        time.sleep(poll_s)
    return "max wait reached"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drain.py", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("role", choices=["envoy", "ext-proc"])
    p.add_argument("--admin", default="/run/envoy-admin/admin.sock", help="Envoy's admin Unix socket")
    p.add_argument("--settle", type=float, default=10.0, help="seconds before Envoy may exit idle")
    p.add_argument("--max-wait", type=float, default=600.0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    started = time.monotonic()
    if args.role == "envoy":
        outcome = drain_envoy(args.admin, args.settle, args.max_wait)
    else:
        outcome = wait_for_exit(args.admin, args.max_wait)
    # preStop output only shows up in the pod's events when the hook fails; print for `kubectl debug`.
    print(f"drain {args.role}: {outcome} after {time.monotonic() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
