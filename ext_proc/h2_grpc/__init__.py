"""A small HTTP/2 server for gRPC bidirectional streams, run on the event loop itself.

Why not ``grpc.aio``: there every gRPC message crosses three threads (an event
engine thread reads the socket, the completion-queue poller hands the event over,
the event loop runs the handler). ext_proc spent 0.55 ms of CPU per request there,
against 0.22 ms here; the gateway's own logic is about 0.05 ms. Here one ``data_received``
parses every frame the read delivered, for all of Envoy's streams at once, and all
the replies produced in one loop iteration leave in one write (bench/README.md has
the measurements). ``grpc.aio`` stays available behind ``INFERY_EXT_PROC_SERVER=grpcio``
(:mod:`ext_proc.grpcio_server`), serving the same :class:`Method` table.

Scope: what Envoy's gRPC client speaks — cleartext HTTP/2 with prior knowledge,
uncompressed messages, no server push. Stream-stream methods only; a unary or
streaming client works too, as gRPC frames them the same way. HPACK, both ways,
is the ``hpack`` package's; the few header blocks the server sends are never-indexed
fields, so the peer's table settings cannot desynchronise them.

Modules, each with one job: :mod:`.frames` (bytes: HTTP/2 frames and gRPC messages),
:mod:`.connection` (one connection's streams, windows, settings and HPACK state),
:mod:`.server` (listeners, the method table, running a method on a stream), and
:mod:`.limits` (what one peer may make a connection hold or do: the defences against
rapid reset, PING/SETTINGS and CONTINUATION floods, and peers that ignore flow control).
"""

from ext_proc.h2_grpc.connection import Connection
from ext_proc.h2_grpc.limits import MAX_MESSAGE, Limits
from ext_proc.h2_grpc.server import CALL_METADATA, TOKEN_HEADER, Handler, Method, Server

__all__ = [
    "CALL_METADATA",
    "MAX_MESSAGE",
    "TOKEN_HEADER",
    "Connection",
    "Handler",
    "Limits",
    "Method",
    "Server",
]
