"""Chains cut to what workspaces may use: one variant per distinct allowed subset."""

from __future__ import annotations

from infery_proto.v1 import config_pb2

from control_plane.store.chain_variants import add_variants, variant_clusters


def _chain() -> config_pb2.Route:
    return config_pb2.Route(slug="a", fallbacks=["b", "c"], retry_on=["5xx"], cluster="route_a")


def test_a_variant_per_distinct_restriction():
    route = _chain()
    workspaces = [
        config_pb2.Workspace(id="1", allowed_models=["a", "c"]),
        config_pb2.Workspace(id="2", allowed_models=["c", "a", "z"]),  # same subset: shared
        config_pb2.Workspace(id="3", allowed_models=["a"]),
        config_pb2.Workspace(id="4", allowed_models=["a", "b", "c"]),  # the chain itself
        config_pb2.Workspace(id="5", allowed_models=["b", "c"]),  # no primary: refused before routing
        config_pb2.Workspace(id="6"),  # every model
    ]
    add_variants([route], workspaces)
    assert [list(v.targets) for v in route.variants] == [["a", "c"], ["a"]]
    assert len({v.cluster for v in route.variants}) == 2
    assert all(v.cluster.startswith("route_a_") for v in route.variants)


def test_each_variant_is_an_envoy_cluster_of_its_targets():
    route = _chain()
    add_variants([route], [config_pb2.Workspace(id="1", allowed_models=["a", "c"])])
    assert variant_clusters([route]) == [(route.variants[0].cluster, ["a", "c"])]
