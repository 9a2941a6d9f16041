"""Usage analytics: one record per request, grouped per key, model, member and day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from infery.stack import Stack
from tests.e2e.support import Admin, eventually, new_tenant

HI = [{"role": "user", "content": "hello there"}]


def test_usage_groupings_are_exact(gateway: Stack, admin: Admin, catalog):
    tenant = new_tenant(admin, gateway, "analytics")
    second_member = admin.member("analytics", "second@analytics.example")
    second_key = admin.key("analytics", second_member["id"], name="second")
    eventually(lambda: admin.call("GET", "/workspaces/analytics/keys"))
    first = tenant.client(gateway)
    import openai

    second = openai.OpenAI(base_url=gateway.base_url, api_key=second_key["key"], max_retries=0)
    eventually(lambda: second.models.list())
    charged: dict[tuple[str, str], Decimal] = {}
    ids = []
    for client, key_id, model in [
        (first, tenant.key_id, "gpt-4o-mini"),
        (first, tenant.key_id, "gpt-4o-mini"),
        (first, tenant.key_id, "text-embedding-3-small"),
        (second, second_key["id"], "gpt-4o-mini"),
    ]:
        if model.startswith("text-embedding"):
            raw = client.embeddings.with_raw_response.create(model=model, input="some words")
        else:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)
        ids.append(raw.headers["x-request-id"])
        charged[(key_id, model)] = charged.get((key_id, model), Decimal(0)) + Decimal(
            raw.headers["x-credits-used"]
        )
    eventually(lambda: all(admin.usage_record(i) for i in ids))

    by_key = {r["group"]: r for r in admin.usage(workspace="analytics", group_by="key")}
    assert by_key[tenant.key_id]["requests"] == 3 and by_key[second_key["id"]]["requests"] == 1
    assert Decimal(by_key[tenant.key_id]["credits"]) == sum(
        v for (k, _), v in charged.items() if k == tenant.key_id
    )

    by_model = {r["group"]: r for r in admin.usage(workspace="analytics", group_by="model")}
    assert by_model["gpt-4o-mini"]["requests"] == 3 and by_model["text-embedding-3-small"]["requests"] == 1
    assert Decimal(by_model["gpt-4o-mini"]["credits"]) == sum(
        v for (_, m), v in charged.items() if m == "gpt-4o-mini"
    )

    by_member = {r["group"]: r for r in admin.usage(workspace="analytics", group_by="member")}
    assert by_member[tenant.member_id]["requests"] == 3 and by_member[second_member["id"]]["requests"] == 1

    by_day = admin.usage(workspace="analytics", group_by="day")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert [r["group"] for r in by_day] == [today]
    assert by_day[0]["requests"] == 4
    assert Decimal(by_day[0]["credits"]) == sum(charged.values())
