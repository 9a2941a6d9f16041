"""ext_proc's configuration from the control plane's protobuf resources: what `build` makes of each
resource, what it leaves out (dangling references) or refuses (invalid values), and how a change
applied to a live `ConfigState` touches only what it names."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import config_pb2
from infery_proto.wire import CHAIN_ROUTE, MODEL_ROUTE_HEADER

from ext_proc import config, endpoints, translators
from ext_proc.config import ConfigState, KeyTable
from ext_proc.metering import Prices
from ext_proc.translators import chat_anthropic, chat_openai


def _provider(name: str = "openai", kind: str = "openai", **fields: str) -> config_pb2.Provider:
    defaults = {
        "base_url": "https://api.openai.com/v1",
        "api_key": "sk-1",
        "cluster": f"provider_{name}",
        "base_path": "/v1",
        "host": "api.openai.com",
    }
    return config_pb2.Provider(name=name, kind=kind, **(defaults | fields))


def _model(slug: str = "gpt-4o", provider: str = "openai", **fields: Any) -> config_pb2.Model:
    return config_pb2.Model(slug=slug, provider=provider, upstream_model=f"{slug}-up", **fields)


def _key(key_id: str, workspace: str = "w1", member: str = "m1") -> config_pb2.ApiKey:
    return config_pb2.ApiKey(
        id=key_id, key_hash=f"hash-{key_id}", workspace_id=workspace, member_id=member, name=f"key {key_id}"
    )


def _build(**resources: list[Any]) -> config.GatewayConfig:
    return config.build(
        resources.get("providers", [_provider()]),
        resources.get("models", [_model()]),
        resources.get("workspaces", [config_pb2.Workspace(id="w1", name="one")]),
        resources.get("keys", []),
        resources.get("routes", []),
        resources.get("secrets", []),
    )


# -- build ----------------------------------------------------------------------------------------


def test_a_model_carries_its_provider_translator_and_exact_prices():
    prices = config_pb2.Prices(input_per_mtok="2.50", cached_input_per_mtok="1.25", output_per_mtok="10")
    built = _build(
        providers=[_provider(), _provider("claude", "anthropic", host="api.anthropic.com")],
        models=[
            _model(prices=prices, capabilities=["vision", "tools", "vision"], created=1_700_000_000),
            _model("sonnet", "claude"),
        ],
    )
    gpt = built.models["gpt-4o"]
    assert (gpt.slug, gpt.upstream_model, gpt.created) == ("gpt-4o", "gpt-4o-up", 1_700_000_000)
    assert gpt.capabilities == frozenset({"vision", "tools"})
    assert gpt.prices == Prices(Decimal("2.50"), Decimal("1.25"), Decimal("10"), None)
    provider = gpt.provider
    assert (provider.name, provider.kind, provider.cluster, provider.base_path, provider.host) == (
        "openai",
        "openai",
        "provider_openai",
        "/v1",
        "api.openai.com",
    )
    assert provider.api_key == "sk-1"
    # The provider's translators are its kind's, one per endpoint (translators.translator_for).
    chat = endpoints.by_path("/v1/chat/completions")
    assert chat is not None
    assert provider.wire_format == "openai"
    assert translators.translator_for(chat, provider.kind) is chat_openai.TRANSLATOR
    assert built.models["sonnet"].provider.wire_format == "anthropic"
    assert translators.translator_for(chat, built.models["sonnet"].provider.kind) is chat_anthropic.TRANSLATOR
    # One Provider object for all its models.
    more = _build(models=[_model(), _model("gpt-4o-mini")])
    assert more.models["gpt-4o"].provider is more.models["gpt-4o-mini"].provider


def test_an_unpriced_model_has_no_prices_rather_than_zero_ones():
    assert _build().models["gpt-4o"].prices == Prices(None, None, None, None)


def test_workspace_defaults_and_the_difference_between_unset_and_zero_limits():
    built = _build(
        workspaces=[
            config_pb2.Workspace(id="w1", name="defaults"),
            config_pb2.Workspace(
                id="w2",
                name="limited",
                rpm=0,
                tpm=40_000,
                budget_credits="12.50",
                budget_period="day",
                price_multiplier="1.2",
                allowed_models=["gpt-4o"],
                share_idempotent_replays=True,
            ),
        ]
    )
    open_ = built.workspaces["w1"]
    assert (open_.rpm, open_.tpm, open_.budget_credits) == (None, None, None)  # unset: unlimited
    assert (open_.budget_period, open_.price_multiplier) == ("month", Decimal(1))
    assert open_.allowed_models is None and open_.allows("anything")
    assert open_.share_idempotent_replays is False
    limited = built.workspaces["w2"]
    assert (limited.rpm, limited.tpm) == (0, 40_000)  # 0 is a limit (admits nothing), not "unset"
    assert (limited.budget_credits, limited.budget_period) == (Decimal("12.50"), "day")
    assert limited.price_multiplier == Decimal("1.2")
    assert limited.allowed_models == frozenset({"gpt-4o"})
    assert limited.allows("gpt-4o") and not limited.allows("gpt-4o-mini")
    assert limited.share_idempotent_replays is True


def test_keys_are_found_by_hash_with_their_workspace_by_id():
    built = _build(keys=[_key("k1"), _key("k2", member="m2")])
    assert len(built.keys_by_hash) == 2
    assert built.keys_by_hash.get("hash-k2") == ("k2", "hash-k2", "w1", "m2", "key k2")
    assert "hash-k1" in built.keys_by_hash and "k1" not in built.keys_by_hash  # by hash, not id
    assert built.keys_by_hash.get("hash-unknown") is None


def test_keys_share_one_string_per_workspace_member_and_name():
    workspace = "".join(["w", "1"])  # a fresh string each time, as protobuf decoding makes them
    keys = [_key(f"k{i}", workspace="".join(["w", "1"])) for i in range(3)]
    table = _build(keys=keys).keys_by_hash
    records = [table.get(f"hash-k{i}") for i in range(3)]
    assert all(r is not None and r[2] is records[0][2] for r in records)
    assert records[0][2] == workspace


def test_a_route_keeps_its_chain_triggers_timeouts_and_variants():
    route = config_pb2.Route(
        slug="gpt-4o",
        fallbacks=["sonnet", "flash"],
        retry_on=["5xx", "429"],
        attempt_timeout_s=10,
        total_timeout_s=30.5,
        cluster="chain_gpt-4o",
        variants=[config_pb2.ChainVariant(targets=["gpt-4o", "flash"], cluster="chain_gpt-4o_v1")],
    )
    built = _build(routes=[route])
    r = built.routes["gpt-4o"]
    assert (r.fallbacks, r.retry_on) == (("sonnet", "flash"), ("5xx", "429"))
    assert (r.attempt_timeout_s, r.total_timeout_s, r.cluster) == (10.0, 30.5, "chain_gpt-4o")
    assert r.variants == {("gpt-4o", "flash"): "chain_gpt-4o_v1"}


def test_a_route_tells_envoy_each_cluster_its_own_number_of_retries():
    """Made once per route: the chain's cluster retries once per fallback, a variant once per
    fallback it kept; a request to the model's provider alone takes the chain's values."""
    route = config.Route(
        "a", ("b", "c"), ("5xx",), 2, 30, "chain_a", {("a", "c"): "chain_a_v1", ("a",): "v2"}
    )
    router = {cluster: _preset(headers) for cluster, headers in route.router.items()}
    retries = {cluster: headers.get("x-envoy-max-retries") for cluster, headers in router.items()}
    assert retries == {"chain_a": "2", "chain_a_v1": "1", "v2": None}  # v2: the primary alone
    assert all(h["x-envoy-upstream-rq-timeout-ms"] == "30000" for h in router.values())
    assert all(h[MODEL_ROUTE_HEADER] == CHAIN_ROUTE for h in router.values())
    assert route.direct == route.router["chain_a"]
    plain = config.Route("a", (), (), 2, 30, "")
    assert plain.router == {} and _preset(plain.direct) == {
        "x-envoy-upstream-rq-per-try-timeout-ms": "2000",
        "x-envoy-upstream-rq-timeout-ms": "30000",
    }


def _preset(mutation: bytes) -> dict[str, str]:
    """The headers a preset HeaderMutation sets (envoy_messages.preset)."""
    message = ep.HeaderMutation.FromString(mutation)
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in message.set_headers)
    return {h.header.key: h.header.raw_value.decode() for h in message.set_headers}


def test_the_attempt_grant_key_comes_from_the_data_plane_secret():
    assert _build().attempt_grant_key == b""
    secret = config_pb2.DataPlaneSecret(name="data-plane", attempt_grant_key=b"k" * 32)
    assert _build(secrets=[secret]).attempt_grant_key == b"k" * 32


def test_dangling_references_are_left_out_without_an_error():
    built = _build(
        providers=[_provider(), _provider("future", "a-kind-this-version-lacks")],
        models=[_model(), _model("orphan", "no-such-provider"), _model("new", "future")],
    )
    assert set(built.models) == {"gpt-4o"}


@pytest.mark.parametrize(
    ("resources", "named"),
    [
        ({"models": [_model(prices=config_pb2.Prices(input_per_mtok="cheap"))]}, "gpt-4o"),
        ({"workspaces": [config_pb2.Workspace(id="w9", price_multiplier="x1.5")]}, "w9"),
        ({"workspaces": [config_pb2.Workspace(id="w8", budget_credits="lots")]}, "w8"),
    ],
)
def test_an_invalid_value_fails_the_whole_build_naming_the_resource(resources, named):
    with pytest.raises(ValueError, match=rf"^{named}: "):
        _build(**resources)


# -- the chain a workspace may use ----------------------------------------------------------------


def _workspace(allowed: list[str]) -> config.Workspace:
    return _build(workspaces=[config_pb2.Workspace(id="w", allowed_models=allowed)]).workspaces["w"]


def test_a_workspace_allowed_every_target_gets_the_chain_itself():
    route = config.Route("a", ("b", "c"), (), 0, 0, "chain_a", {("a", "c"): "chain_a_v1"})
    assert route.allowed_chain(_workspace([])) == (("a", "b", "c"), "chain_a")
    assert route.allowed_chain(_workspace(["a", "b", "c", "d"])) == (("a", "b", "c"), "chain_a")


def test_a_workspace_excluded_from_a_target_gets_its_variant_or_the_chain_until_published():
    route = config.Route("a", ("b", "c"), (), 0, 0, "chain_a", {("a", "c"): "chain_a_v1"})
    assert route.allowed_chain(_workspace(["a", "c"])) == (("a", "c"), "chain_a_v1")
    # No variant for (b, c) yet: the chain's own cluster; its attempts refuse 'a'.
    assert route.allowed_chain(_workspace(["b", "c"])) == (("b", "c"), "chain_a")


# -- the key table --------------------------------------------------------------------------------


def test_putting_a_key_again_replaces_it_and_its_old_hash():
    table = KeyTable()
    table.put(("k1", "old-hash", "w", "m", "n"))
    table.put(("k1", "new-hash", "w", "m", "renamed"))
    assert len(table) == 1
    assert table.get("old-hash") is None
    assert table.get("new-hash") == ("k1", "new-hash", "w", "m", "renamed")


def test_removing_a_key_forgets_both_ways_and_an_unknown_id_is_a_no_op():
    table = KeyTable()
    for i in range(1000):  # across many shards
        table.put((f"k{i}", f"h{i}", "w", "m", "n"))
    table.remove("k7")
    table.remove("never-there")
    assert len(table) == 999 and "h7" not in table and "h8" in table
    table.put(("k7", "h7", "w", "m", "n"))
    assert len(table) == 1000 and table.get("h7") == ("k7", "h7", "w", "m", "n")


# -- changes to a live configuration -------------------------------------------------------------


def _state() -> ConfigState:
    state = ConfigState()
    assert state.apply(config.PROVIDER, [_provider()], ()) == {}
    assert state.apply(config.MODEL, [_model(), _model("gpt-4o-mini")], ()) == {}
    return state


def test_a_provider_change_rebuilds_the_models_it_serves_and_no_view_already_taken():
    state = _state()
    before = state.current
    assert state.apply(config.PROVIDER, [_provider(api_key="sk-rotated")], ()) == {}
    after = state.current
    assert {m.provider.api_key for m in after.models.values()} == {"sk-rotated"}
    assert before.models["gpt-4o"].provider.api_key == "sk-1"  # a request's view does not change under it


def test_removing_a_provider_drops_its_models_and_adding_it_back_restores_them():
    state = _state()
    state.apply(config.PROVIDER, [], ["openai"])
    assert state.current.models == {}
    state.apply(config.PROVIDER, [_provider()], ())
    assert set(state.current.models) == {"gpt-4o", "gpt-4o-mini"}


def test_a_refused_change_keeps_the_previous_version_and_the_others_apply():
    state = _state()
    bad = _model(prices=config_pb2.Prices(output_per_mtok="ten"))
    good = _model("gpt-4o-mini", prices=config_pb2.Prices(output_per_mtok="0.6"))
    errors = state.apply(config.MODEL, [bad, good], ())
    assert set(errors) == {"gpt-4o"}
    assert state.current.models["gpt-4o"].prices.output_per_mtok is None  # the version before
    assert state.current.models["gpt-4o-mini"].prices.output_per_mtok == Decimal("0.6")


def test_removals_and_an_unknown_kind():
    state = _state()
    state.apply(config.MODEL, [], ["gpt-4o-mini", "never-there"])
    assert set(state.current.models) == {"gpt-4o"}
    state.apply(config.DATA_PLANE_SECRET, [config_pb2.DataPlaneSecret(attempt_grant_key=b"s")], ())
    state.apply(config.DATA_PLANE_SECRET, [], ["data-plane"])
    assert state.current.attempt_grant_key == b""
    assert state.apply("Gadget", [object()], ()) == {"Gadget": "unknown resource kind"}


def test_keys_change_in_place_for_every_view():
    """At 10^5 keys a copy per change would stall requests: the table is shared, on purpose."""
    state = _state()
    view = state.current
    state.apply(config.API_KEY, [_key("k1")], ())
    assert "hash-k1" in view.keys_by_hash
    state.apply(config.API_KEY, [], ["k1"])
    assert "hash-k1" not in view.keys_by_hash
