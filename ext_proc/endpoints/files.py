"""``/v1/files`` and ``/v1/files/{id}``, ``{id}/content``: the gateway's stored files, in OpenAI's shapes.

Files are stored by the gateway's files service (control_plane/files/), not by a provider,
and their bytes never pass through ext_proc (``RequestBody.HEADERS_ONLY``): the exchange
checks the client's ``inf_`` key as for chat, then this endpoint tells Envoy to

- send the request to the files service's cluster (:data:`FILES_CLUSTER`, in each
  replica's bootstrap, reached over mutual TLS with the data plane's certificate);
- carry the caller's identity in :data:`identity_assertion.HEADER`, signed with the
  key only ext_proc and the files service hold, for this method and path. Envoy's
  header mutation *overwrites* any copy the client sent, and the service verifies
  the signature, so a forged header is worth nothing;
- drop the client's ``authorization`` and ``x-api-key`` (the key may come in either,
  ext_proc/auth.py; the service has no use for it) and the routing headers a client
  must not choose;
- process nothing more of this request: ``mode_override`` turns off the body and
  response phases, so Envoy streams the upload to the service and the answer back
  to the client without ext_proc in the way. (Envoy's files route says the same
  before the headers reach ext_proc, control_plane/xds/envoy_config.py ``files_route``:
  that is what keeps Envoy from holding the first bytes of a body as if to buffer it.)

ext_proc writes no usage record for it: the files service does, for each upload and
delete, under this request's id (control_plane/files/usage_records.py), since only it
learns whether the file was stored and how many bytes it holds.
"""

from __future__ import annotations

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from infery_proto import identity_assertion
from infery_proto.wire import BATCHES_PATH_PREFIX, FILES_CLUSTER, FILES_PATH_PREFIX, ROUTE_HEADER

from ext_proc import envoy_messages as msg
from ext_proc import header_policy
from ext_proc.errors import GatewayError

from .base import HeadersOnly, HeadersReply, HeadersRequest

_MODE = processing_mode_pb2.ProcessingMode
_REMOVED = ("authorization", "x-api-key", *header_policy.CONTROL)


class Files(HeadersOnly):
    __slots__ = ()

    name = "files"
    paths = (FILES_PATH_PREFIX, FILES_PATH_PREFIX + "/")
    methods = frozenset({"GET", "POST", "DELETE"})

    def on_headers(self, request: HeadersRequest) -> HeadersReply:
        """The request-headers reply that sends the request to the files service as its caller."""
        config = request.config
        if not config.files_identity_key:
            raise GatewayError(503, "upstream_unavailable", "The gateway has no files key yet.")
        key = request.key
        identity = identity_assertion.Identity(request.request_id, key.workspace.id, key.member_id, key.id)
        assertion = identity_assertion.sign(
            config.files_identity_key, identity, request.method, request.target
        )
        overwrite = (
            (identity_assertion.HEADER, assertion),
            (ROUTE_HEADER, FILES_CLUSTER),
            ("x-request-id", request.request_id),
        )
        # The route resolves the cluster from the header set here.
        reply = msg.request_headers(set_headers=overwrite, remove=_REMOVED, clear_route_cache=True)
        mode = reply.mode_override
        mode.request_header_mode = _MODE.SEND  # already sent; the override replaces the whole mode
        mode.request_body_mode = _MODE.NONE
        mode.request_trailer_mode = _MODE.SKIP
        mode.response_header_mode = _MODE.SKIP
        mode.response_body_mode = _MODE.NONE
        mode.response_trailer_mode = _MODE.SKIP
        return reply


class Batches(Files):
    """``/v1/batches`` and below: the Batch API, served by the same files service the same way
    (control_plane/batches/api.py): its input and output are that service's files, and it runs
    nothing itself; the batch workers send each line through the listener (ext_proc/batch_gate.py)."""

    __slots__ = ()

    name = "batches"
    paths = (BATCHES_PATH_PREFIX, BATCHES_PATH_PREFIX + "/")
    methods = frozenset({"GET", "POST"})


ENDPOINT = Files()
BATCHES = Batches()
