"""Incremental publishing of what workspaces' restrictions and the data-plane secret decide.

A chain's variants (chain_variants.py) depend on workspaces: a workspace change must
re-publish exactly the routes whose variants change (to ext_proc as Route resources, to
Envoy as variant clusters; Envoy's route configuration never changes with them), and the
incremental view must equal the one a full read builds. The attempt-grant secret goes to
ext_proc once, never to Envoy.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from infery_proto.v1 import config_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select

from control_plane.store.changes import mutation
from control_plane.store.snapshot import load_snapshot
from control_plane.store.tables import Model, Provider, Route, Workspace
from control_plane.xds.envoy_cache import CLUSTER, ROUTE, EnvoyCache, envoy_resource
from control_plane.xds.envoy_config import ListenerSettings
from control_plane.xds.publisher import DATA_PLANE_SECRET, Publisher, build_resources

ROUTE_TYPE = "type.googleapis.com/infery.v1.Route"


def _setup(session_factory: sessionmaker[Session]) -> None:
    with mutation(session_factory) as session:
        session.add(Provider(name="p", kind="openai", base_url="https://x.example/v1"))
        session.flush()
        for slug in ("a", "b", "c", "x", "y"):
            session.add(Model(slug=slug, provider="p", upstream_model=slug))
        session.flush()
        session.add(
            Route(slug="a", fallbacks=["b", "c"], retry_on=["5xx"], attempt_timeout_s=1, total_timeout_s=2)
        )
        session.add(
            Route(slug="x", fallbacks=["y"], retry_on=["5xx"], attempt_timeout_s=1, total_timeout_s=2)
        )
        session.add(Workspace(name="w1"))
        session.add(Workspace(name="w2"))


def _restrict(session_factory: sessionmaker[Session], name: str, allowed: list[str]) -> None:
    with mutation(session_factory) as session:
        workspace = session.exec(select(Workspace).where(Workspace.name == name)).one()
        workspace.allowed_models = allowed


def _routes_since(publisher: Publisher, revision: int) -> dict[str, config_pb2.Route]:
    out = {}
    for packed in publisher.delta.since(ROUTE_TYPE, revision).resources:
        item = discovery_pb2.DeltaDiscoveryResponse.FromString(packed.wire).resources[0]
        route = config_pb2.Route()
        item.resource.Unpack(route)
        out[item.name] = route
    return out


def _clusters(cache: EnvoyCache) -> set[str]:
    """The names of the clusters Envoy is sent."""
    names = set()
    for item in cache.get(CLUSTER).values():
        cluster = cluster_pb2.Cluster()
        discovery_pb2.Resource.FromString(item.body).resource.Unpack(cluster)
        names.add(cluster.name)
    return names


def _assert_equals_a_full_read(
    publisher: Publisher, cache: EnvoyCache, session_factory: sessionmaker[Session]
) -> None:
    """The incremental view is what a from-scratch read builds (routes with variants, Envoy's)."""
    with session_factory() as session:
        snapshot = load_snapshot(session)
    live = {}
    for packed in publisher.delta.live(ROUTE_TYPE):
        item = discovery_pb2.DeltaDiscoveryResponse.FromString(packed.wire).resources[0]
        route = config_pb2.Route()
        item.resource.Unpack(route)
        live[item.name] = route
    assert live == {r.slug: r for r in snapshot.routes}
    full = build_resources(snapshot, ListenerSettings())
    for type_url in (CLUSTER, ROUTE):
        assert cache.get(type_url) == {m.name: envoy_resource(m) for m in full[type_url]}


async def test_a_workspace_restriction_republishes_only_the_routes_whose_variants_change(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    cache = EnvoyCache()
    # No ext_proc connected and no drain period: a dropped variant's cluster goes at once
    # (its retirement while ext_proc may still name it: tests/control_plane/test_xds_order.py).
    publisher = Publisher(cache, session_factory, ListenerSettings(), retire_after_s=0)
    await publisher.publish()
    routes = cache.get(ROUTE)  # the route configuration: the same throughout
    assert _clusters(cache) == {"provider_p", "route_a", "route_x"}
    _assert_equals_a_full_read(publisher, cache, session_factory)

    before = publisher.revision
    _restrict(session_factory, "w1", ["a", "c"])
    await publisher.publish()
    changed = _routes_since(publisher, before)
    assert list(changed) == ["a"]  # x's chain is not named by the restriction: not re-sent
    [variant] = changed["a"].variants
    assert list(variant.targets) == ["a", "c"]
    assert _clusters(cache) == {"provider_p", "route_a", "route_x", variant.cluster}
    assert cache.get(ROUTE) == routes
    _assert_equals_a_full_read(publisher, cache, session_factory)

    # The same restriction again: the variant is shared, nothing is re-published.
    before, envoy_clusters = publisher.revision, cache.get(CLUSTER)
    _restrict(session_factory, "w2", ["c", "a"])
    await publisher.publish()
    assert _routes_since(publisher, before) == {}
    assert cache.get(CLUSTER) is envoy_clusters

    # One of the two lifts it: still in use by the other.
    _restrict(session_factory, "w1", [])
    await publisher.publish()
    assert _routes_since(publisher, before) == {}

    # The last one narrows it: a's variant becomes ["a"], the old one's cluster goes.
    _restrict(session_factory, "w2", ["a", "x"])
    await publisher.publish()
    changed = _routes_since(publisher, before)
    assert sorted(changed) == ["a", "x"]
    assert [list(v.targets) for v in changed["a"].variants] == [["a"]]
    assert [list(v.targets) for v in changed["x"].variants] == [["x"]]
    clusters = _clusters(cache)
    assert variant.cluster not in clusters
    assert {v.cluster for r in changed.values() for v in r.variants} <= clusters
    assert cache.get(ROUTE) == routes
    _assert_equals_a_full_read(publisher, cache, session_factory)

    # The workspace is deleted: no restriction is left, no variant either.
    before = publisher.revision
    with mutation(session_factory) as session:
        session.delete(session.exec(select(Workspace).where(Workspace.name == "w2")).one())
    await publisher.publish()
    changed = _routes_since(publisher, before)
    assert sorted(changed) == ["a", "x"] and not any(r.variants for r in changed.values())
    assert _clusters(cache) == {"provider_p", "route_a", "route_x"}
    assert cache.get(ROUTE) == routes
    _assert_equals_a_full_read(publisher, cache, session_factory)


async def test_a_new_route_gets_the_variants_of_the_restrictions_in_force(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    _restrict(session_factory, "w1", ["b", "c"])
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings())
    await publisher.publish()
    before = publisher.revision
    with mutation(session_factory) as session:
        session.add(
            Route(slug="b", fallbacks=["a", "c"], retry_on=["5xx"], attempt_timeout_s=1, total_timeout_s=2)
        )
    await publisher.publish()
    changed = _routes_since(publisher, before)
    assert list(changed) == ["b"] and [list(v.targets) for v in changed["b"].variants] == [["b", "c"]]
    _assert_equals_a_full_read(publisher, cache, session_factory)


async def test_the_data_plane_secret_goes_to_ext_proc_once_and_never_to_envoy(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings())
    await publisher.publish()
    [packed] = publisher.delta.live(DATA_PLANE_SECRET)
    item = discovery_pb2.DeltaDiscoveryResponse.FromString(packed.wire).resources[0]
    secret = config_pb2.DataPlaneSecret()
    item.resource.Unpack(secret)
    assert len(secret.attempt_grant_key) == 32
    assert len(secret.files_identity_key) == 32 and secret.files_identity_key != secret.attempt_grant_key
    assert cache.get("type.googleapis.com/infery.v1.DataPlaneSecret") == {}
    before = publisher.revision
    _restrict(session_factory, "w1", ["a"])
    await publisher.publish()
    assert publisher.revision > before
    assert publisher.delta.since(DATA_PLANE_SECRET, before).resources == []  # unchanged: not re-sent
    for type_url in (CLUSTER, ROUTE):
        items = cache.get(type_url).values()
        assert items
        assert all(secret.attempt_grant_key not in r.body for r in items)
        assert all(secret.files_identity_key not in r.body for r in items)
