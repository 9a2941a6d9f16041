"""The one signed-value format: what it asserts, for whom, until when, and everything that breaks it."""

from __future__ import annotations

from infery_proto.signed_token import _b64, seal, unseal

KEY = b"k" * 32
FIELDS = ["ws.1", "", "any\ncharacter/=+"]


def test_fields_come_back_as_sealed_until_the_expiry():
    value = seal(KEY, "aud-v1", 1000, FIELDS, "GET\n/x")
    assert unseal(KEY, "aud-v1", value, 3, "GET\n/x", now=1000) == FIELDS
    assert unseal(KEY, "aud-v1", value, 3, "GET\n/x", now=1001) is None


def test_another_key_audience_context_count_or_any_changed_part_is_refused():
    value = seal(KEY, "aud-v1", 1000, FIELDS, "ctx")
    assert unseal(b"x" * 32, "aud-v1", value, 3, "ctx", now=0) is None
    assert unseal(KEY, "aud-v2", value, 3, "ctx", now=0) is None
    assert unseal(KEY, "aud-v1", value, 3, "other", now=0) is None
    assert unseal(KEY, "aud-v1", value, 2, "ctx", now=0) is None
    payload, _, mac = value.rpartition(".")
    parts = payload.split(".")
    for index in range(len(parts)):
        changed = list(parts)
        changed[index] = "9999999999" if index == 1 else _b64("other")
        assert unseal(KEY, "aud-v1", ".".join(changed) + "." + mac, 3, "ctx", now=0) is None, index
    assert unseal(KEY, "aud-v1", value[:-2], 3, "ctx", now=0) is None


def test_no_key_no_value_or_garbage_asserts_nothing():
    assert unseal(b"", "aud-v1", seal(b"", "aud-v1", 1000, FIELDS), 3, now=0) is None
    for value in ("", "garbage", "aud-v1.x.a.b.c.mac", "aud-v1.1000.!!.b.c.mac"):
        assert unseal(KEY, "aud-v1", value, 3, now=0) is None
