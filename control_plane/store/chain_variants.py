"""Fallback chains cut to what a workspace may use.

A workspace whose ``allowed_models`` exclude some targets of a chain must never be
served by them. Envoy walks a chain by priorities and does not retry an upstream
filter's own reply (measured: an attempt answering 403 or 503 ended the request), so
an attempt cannot skip its target; instead such a workspace's requests go to a chain
cluster holding only its allowed targets. One variant per distinct subset, not per
workspace: workspaces with the same restrictions share it.

A chain's variants depend only on the distinct restrictions (``allowed_models`` sets)
that contain its primary, so when a restriction appears or disappears only the routes
it names can change (`affected_routes`): the publisher recomputes those, not every chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

from infery_proto.v1 import config_pb2

Restriction = frozenset[str]  # a workspace's allowed models (never empty: empty = every model)


def variant_cluster(chain_cluster: str, targets: list[str]) -> str:
    return f"{chain_cluster}_{hashlib.sha256(','.join(targets).encode()).hexdigest()[:10]}"


def restriction(workspace: config_pb2.Workspace) -> Restriction | None:
    """The workspace's restriction, None when it may use every model."""
    return frozenset(workspace.allowed_models) if workspace.allowed_models else None


def chain_variants(
    route: config_pb2.Route, restrictions: Iterable[Restriction]
) -> list[config_pb2.ChainVariant]:
    """The chain's variants for these restrictions, widest first (the same order on every replica)."""
    if not route.cluster:
        return []
    chain = [route.slug, *route.fallbacks]
    cut: set[tuple[str, ...]] = set()
    for allowed in restrictions:
        # Not allowed the primary: refused before routing. Allowed all: the chain itself.
        if route.slug in allowed:
            targets = tuple(t for t in chain if t in allowed)
            if len(targets) != len(chain):
                cut.add(targets)
    return [
        config_pb2.ChainVariant(targets=targets, cluster=variant_cluster(route.cluster, list(targets)))
        for targets in sorted(cut, key=lambda t: (-len(t), t))
    ]


def set_variants(route: config_pb2.Route, restrictions: Collection[Restriction]) -> bool:
    """Replace ``route.variants`` (in place); whether they changed."""
    variants = chain_variants(route, restrictions)
    if list(route.variants) == variants:
        return False
    del route.variants[:]
    route.variants.extend(variants)
    return True


def add_variants(routes: Iterable[config_pb2.Route], workspaces: Iterable[config_pb2.Workspace]) -> None:
    """Fill each chain's ``variants`` for the workspaces' restrictions (in place)."""
    restrictions = {r for r in map(restriction, workspaces) if r is not None}
    for route in routes:
        set_variants(route, restrictions)


def affected_routes(changed: Iterable[Restriction]) -> set[str]:
    """The routes (by primary slug) whose variants restrictions that appeared or disappeared may change."""
    return {slug for allowed in changed for slug in allowed}


def variant_clusters(routes: Iterable[config_pb2.Route]) -> list[tuple[str, list[str]]]:
    """Each variant as an Envoy cluster of its own: its name and its targets, primary first.

    Its retries and timeouts are the chain's: ext_proc sends them with each request
    (ext_proc/header_policy.py: ``router_headers``), as many retries as the variant has fallbacks.
    """
    return [(variant.cluster, list(variant.targets)) for route in routes for variant in route.variants]
