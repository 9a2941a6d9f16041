"""Envoy's route for the audio uploads: the default route's cluster, with ext_proc reading the
request body as a stream (per-route STREAMED) and answering the headers once it has seen the model."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from infery_proto.wire import ROUTE_HEADER, STREAMED_BODY_PATHS

from control_plane.xds.envoy_config import (
    ListenerSettings,
    listener,
    route_configuration,
    route_entry,
    streamed_body_route,
)

MODE = processing_mode_pb2.ProcessingMode


def _unpacked(action: object) -> route_components_pb2.Route:
    route = route_components_pb2.Route()
    action.typed_config.Unpack(route)  # type: ignore[attr-defined]
    return route


def test_the_route_streams_the_request_body_to_ext_proc() -> None:
    s = ListenerSettings(request_timeout_s=600)
    route = streamed_body_route(s)
    default = route_entry(None, s)
    assert route.route == default.route and route.route.cluster_header == ROUTE_HEADER
    assert list(route.request_headers_to_remove) == list(default.request_headers_to_remove)
    per_route = ext_proc_pb2.ExtProcPerRoute()
    route.typed_per_filter_config["envoy.filters.http.ext_proc"].Unpack(per_route)
    mode = per_route.overrides.processing_mode
    assert (mode.request_header_mode, mode.request_body_mode) == (MODE.SEND, MODE.STREAMED)
    assert (mode.response_header_mode, mode.response_body_mode) == (MODE.SEND, MODE.BUFFERED)
    assert not default.typed_per_filter_config  # every other route keeps the listener's BUFFERED


def test_ext_proc_may_read_a_streamed_body_before_answering_its_headers() -> None:
    hcm = listener(ListenerSettings()).filter_chains[0].filters[0]
    manager = http_connection_manager_pb2.HttpConnectionManager()
    hcm.typed_config.Unpack(manager)
    ext_proc = ext_proc_pb2.ExternalProcessor()
    manager.http_filters[0].typed_config.Unpack(ext_proc)
    assert ext_proc.send_body_without_waiting_for_header_response
    assert ext_proc.processing_mode.request_body_mode == MODE.BUFFERED  # the listener's default


def test_the_upload_paths_are_the_no_match_branch_before_the_default_route() -> None:
    s = ListenerSettings()
    default, streamed = route_entry(None, s), streamed_body_route(s)
    chain = route_entry(None, s)
    chain.name = "gpt-4o"
    config = route_configuration({"gpt-4o": chain}, default, streamed=streamed)
    matcher = config.virtual_hosts[0].matcher
    assert set(matcher.matcher_tree.exact_match_map.map) == {"gpt-4o"}
    by_path = matcher.on_no_match.matcher
    rules = list(by_path.matcher_list.matchers)
    assert [r.predicate.single_predicate.value_match.prefix for r in rules] == list(STREAMED_BODY_PATHS)
    assert all(_unpacked(r.on_match.action) == streamed for r in rules)
    assert _unpacked(by_path.on_no_match.action) == default

    plain = route_configuration({}, default, streamed=streamed)  # no chains: an ordered list
    routes = list(plain.virtual_hosts[0].routes)
    assert [r.match.prefix for r in routes] == [*STREAMED_BODY_PATHS, "/"]
    assert routes[-1] == default and all(r.typed_per_filter_config for r in routes[:-1])
