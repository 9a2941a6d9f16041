"""``/v1/files*``: authenticate the headers, then let Envoy stream the request to the files service.

Files are stored by the gateway's files service (control_plane/files/), not by a
provider, and their bytes never pass through ext_proc: this module answers the
request-headers message only. It checks the client's ``inf_`` key as for chat,
then tells Envoy to

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

No usage record: storing a file costs no credits (usage analytics of files are
another change).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto import identity_assertion
from infery_proto.wire import FILES_CLUSTER, FILES_PATH_PREFIX

from ext_proc import envoy_messages as msg
from ext_proc.auth import authenticate
from ext_proc.config import GatewayConfig
from ext_proc.errors import GatewayError

PREFIX = FILES_PATH_PREFIX
_MODE = processing_mode_pb2.ProcessingMode


def serves(path: str) -> bool:
    """Whether ``path`` (without its query) is the files API: ``/v1/files`` or below it."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def forward(
    headers: Mapping[str, str],
    config: GatewayConfig,
    request_id: str,
    route_header: str,
    control_headers: Iterable[str],
) -> ep.ProcessingResponse:
    """The request-headers reply that sends an authenticated files request to the files service.

    ``headers``: the request's ``:path``, ``:method``, ``authorization`` and ``x-api-key``. ``route_header``
    names the cluster to Envoy's route; ``control_headers`` are the routing headers a client
    must not set. Raises :class:`GatewayError` (401) for a missing or unknown key.
    """
    key = authenticate(headers.get("authorization"), headers.get("x-api-key"), config)
    if not config.files_identity_key:
        raise GatewayError(503, "upstream_unavailable", "The gateway has no files key yet.")
    identity = identity_assertion.Identity(request_id, key.workspace.id, key.member_id, key.id)
    assertion = identity_assertion.sign(
        config.files_identity_key, identity, headers.get(":method", "GET"), headers.get(":path", PREFIX)
    )
    overwrite = (
        (identity_assertion.HEADER, assertion),
        (route_header, FILES_CLUSTER),
        ("x-request-id", request_id),
    )
    resp = msg.request_headers(set_headers=overwrite, remove=("authorization", "x-api-key", *control_headers))
    # The route resolves the cluster from the header set here.
    resp.request_headers.response.clear_route_cache = True
    mode = resp.mode_override
    mode.request_header_mode = _MODE.SEND  # already sent; the override replaces the whole mode
    mode.request_body_mode = _MODE.NONE
    mode.request_trailer_mode = _MODE.SKIP
    mode.response_header_mode = _MODE.SKIP
    mode.response_body_mode = _MODE.NONE
    mode.response_trailer_mode = _MODE.SKIP
    return resp
