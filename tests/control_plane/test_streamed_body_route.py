"""Envoy's route for the audio uploads: the default route's cluster, with the listener's ext_proc
off and its upload instance on, which reads the request body as a stream and may answer the
headers once it has seen the model; every other route keeps the listener's ext_proc alone."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from infery_proto.wire import CHAIN_ROUTE, EXT_PROC_FILTER, ROUTE_HEADER, STREAMED_BODY_PATHS

from control_plane.xds.envoy_config import (
    UPLOAD_FILTER,
    ListenerSettings,
    chain_route,
    default_route,
    listener,
    route_configuration,
    streamed_body_route,
)

MODE = processing_mode_pb2.ProcessingMode


def _unpacked(action: object) -> route_components_pb2.Route:
    route = route_components_pb2.Route()
    action.typed_config.Unpack(route)  # type: ignore[attr-defined]
    return route


def test_the_route_turns_the_upload_filter_on_and_the_listeners_off() -> None:
    s = ListenerSettings(request_timeout_s=600)
    route = streamed_body_route(s)
    default = default_route(s)
    assert route.route == default.route and route.route.cluster_header == ROUTE_HEADER
    assert list(route.request_headers_to_remove) == list(default.request_headers_to_remove)
    listeners = route_components_pb2.FilterConfig()
    route.typed_per_filter_config[EXT_PROC_FILTER].Unpack(listeners)
    assert listeners.disabled
    upload = route_components_pb2.FilterConfig()
    route.typed_per_filter_config[UPLOAD_FILTER].Unpack(upload)
    assert not upload.disabled
    per_route = ext_proc_pb2.ExtProcPerRoute()
    upload.config.Unpack(per_route)
    mode = per_route.overrides.processing_mode
    assert (mode.request_header_mode, mode.request_body_mode) == (MODE.SEND, MODE.STREAMED)
    assert (mode.response_header_mode, mode.response_body_mode) == (MODE.SEND, MODE.BUFFERED)
    assert not default.typed_per_filter_config  # every other route: the listener's ext_proc alone


def test_only_the_upload_filter_reads_bodies_before_answering_headers() -> None:
    hcm = listener(ListenerSettings()).filter_chains[0].filters[0]
    manager = http_connection_manager_pb2.HttpConnectionManager()
    hcm.typed_config.Unpack(manager)
    first, upload, router = manager.http_filters
    assert (first.name, upload.name, router.name) == (
        EXT_PROC_FILTER,
        UPLOAD_FILTER,
        "envoy.filters.http.router",
    )
    assert not first.disabled and upload.disabled  # off unless a route turns it on
    listeners, uploads = ext_proc_pb2.ExternalProcessor(), ext_proc_pb2.ExternalProcessor()
    first.typed_config.Unpack(listeners)
    upload.typed_config.Unpack(uploads)
    # The option changes how Envoy handles responses too (SSE arrived whole): never on the first.
    assert not listeners.send_body_without_waiting_for_header_response
    assert uploads.send_body_without_waiting_for_header_response
    assert uploads.processing_mode.request_body_mode == MODE.STREAMED
    assert listeners.processing_mode.request_body_mode == MODE.BUFFERED
    assert (
        uploads.grpc_service == listeners.grpc_service
        and uploads.message_timeout == listeners.message_timeout
    )
    assert uploads.metadata_options == listeners.metadata_options  # a chain's grant reaches its attempts


def test_the_upload_paths_are_the_no_match_branch_before_the_default_route() -> None:
    s = ListenerSettings()
    default, streamed = default_route(s), streamed_body_route(s)
    config = route_configuration(default, chain_route(s), streamed=streamed)
    matcher = config.virtual_hosts[0].matcher
    assert set(matcher.matcher_tree.exact_match_map.map) == {CHAIN_ROUTE}
    by_path = matcher.on_no_match.matcher
    rules = list(by_path.matcher_list.matchers)
    assert [r.predicate.single_predicate.value_match.prefix for r in rules] == list(STREAMED_BODY_PATHS)
    assert all(_unpacked(r.on_match.action) == streamed for r in rules)
    assert _unpacked(by_path.on_no_match.action) == default
