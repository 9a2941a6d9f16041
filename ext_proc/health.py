"""``grpc.health.v1.Health/Check`` on ext_proc's own HTTP/2 server, for Envoy's health checker.

Envoy health-checks every ext_proc endpoint (``envoy/bootstrap.yaml``): a stopped,
hung or unconfigured process is taken out of the cluster within seconds, so that
requests go to another ext_proc or fail at once with ``503 gateway_unavailable``
instead of each waiting for its message timeout. The answer is SERVING only once
the process has the control plane's configuration: before that, every request it
took would be refused anyway. Served on the same listeners as ext_proc itself
(TCP port and Unix socket), so a check travels the very path requests take and
needs the event loop to be turning.

Only ``Check``: Envoy does not use ``Watch``, and an unknown method gets
UNIMPLEMENTED from the server. It is the one method a TCP listener serves
without ext_proc's token.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

from grpc_health.v1 import health_pb2

from ext_proc.h2_grpc import Method

CHECK = "/grpc.health.v1.Health/Check"

_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
_NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


def methods(configured: Callable[[], bool]) -> dict[str, Method]:
    """The health method; ``configured()`` says whether ext_proc can serve requests."""

    async def check(
        requests: AsyncIterator[health_pb2.HealthCheckRequest],
    ) -> AsyncGenerator[health_pb2.HealthCheckResponse, None]:
        # One request (the service name is ignored: the whole process is one service).
        async for _ in requests:
            break
        yield _SERVING if configured() else _NOT_SERVING

    return {
        # Public on a TCP listener: Envoy's health checker cannot send ext_proc's token
        # (it is injected by an upstream filter that health checks do not pass through),
        # and SERVING/NOT_SERVING says nothing a port scan would not.
        CHECK: Method(
            check,
            health_pb2.HealthCheckRequest.FromString,
            health_pb2.HealthCheckResponse.SerializeToString,
            public=True,
        )
    }
