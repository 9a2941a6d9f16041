"""Attempt grants: only the key's holder can make one, and one lasts until its expiry."""

from __future__ import annotations

from infery_proto.signed_token import _b64

from ext_proc.attempt_grant import Grant, sign, verify

KEY = b"k" * 32
GRANT = Grant("0123456789abcdef", "ws-1", "member-1")


def test_a_signed_grant_verifies_until_it_expires():
    value = sign(KEY, GRANT, expires_at=1000)
    assert verify(KEY, value, now=999) == GRANT
    assert verify(KEY, value, now=1001) is None


def test_another_key_or_any_change_is_refused():
    value = sign(KEY, GRANT, expires_at=1000)
    assert verify(b"x" * 32, value, now=0) is None
    assert verify(KEY, value.replace(_b64("ws-1"), _b64("ws-2")), now=0) is None
    assert verify(KEY, value.replace(".1000.", ".9999."), now=0) is None
    assert verify(KEY, value[:-2], now=0) is None


def test_no_key_or_no_value_grants_nothing():
    assert verify(b"", sign(b"", GRANT, expires_at=1000), now=0) is None
    assert verify(KEY, "", now=0) is None
    assert verify(KEY, "garbage", now=0) is None
