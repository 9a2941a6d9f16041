"""Envoy's route for /v1/files: to the files cluster, with ext_proc on the request headers only."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from infery_proto.wire import CHAIN_ROUTE

from control_plane.xds.envoy_config import (
    FILES_CLUSTER,
    ListenerSettings,
    chain_route,
    default_route,
    files_route,
    route_configuration,
)

MODE = processing_mode_pb2.ProcessingMode


def _unpacked(action: object) -> route_components_pb2.Route:
    route = route_components_pb2.Route()
    action.typed_config.Unpack(route)  # type: ignore[attr-defined]
    return route


def test_the_files_route_streams_the_body_past_ext_proc():
    route = files_route(ListenerSettings(request_timeout_s=600))
    assert route.match.prefix == "/v1/files"
    assert route.route.cluster == FILES_CLUSTER and route.route.timeout.seconds == 600
    per_route = ext_proc_pb2.ExtProcPerRoute()
    route.typed_per_filter_config["envoy.filters.http.ext_proc"].Unpack(per_route)
    mode = per_route.overrides.processing_mode
    assert mode.request_header_mode == MODE.SEND  # ext_proc authenticates the headers
    assert mode.request_body_mode == MODE.NONE and mode.response_body_mode == MODE.NONE
    assert mode.response_header_mode == MODE.SKIP
    assert "x-infery-cluster" in route.request_headers_to_remove


def test_files_is_the_no_match_branch_before_the_default_route():
    s = ListenerSettings()
    default, files = default_route(s), files_route(s)
    config = route_configuration(default, chain_route(s), files)
    matcher = config.virtual_hosts[0].matcher
    assert set(matcher.matcher_tree.exact_match_map.map) == {CHAIN_ROUTE}
    by_path = matcher.on_no_match.matcher
    # The files service's two APIs, /v1/files and /v1/batches (its route, matching each prefix).
    files_rule, batches_rule = by_path.matcher_list.matchers
    assert files_rule.predicate.single_predicate.value_match.prefix == "/v1/files"
    assert _unpacked(files_rule.on_match.action) == files
    assert batches_rule.predicate.single_predicate.value_match.prefix == "/v1/batches"
    batches = _unpacked(batches_rule.on_match.action)
    assert batches.match.prefix == "/v1/batches"
    batches.match.prefix = "/v1/files"
    assert batches == files  # the same route but for its prefix
    assert _unpacked(by_path.on_no_match.action) == default
