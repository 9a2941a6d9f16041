"""The files identity assertion: only the key's holder makes one, for one method and path, briefly."""

from __future__ import annotations

import pytest
from infery_proto.identity_assertion import LIFETIME_S, Identity, sign, verify
from infery_proto.signed_token import _b64

KEY = b"k" * 32
WHO = Identity("0190abcdef", "ws-1", "member-1", "key-1")
PATH = "/v1/files/file-abc/content"


def test_a_signed_assertion_verifies_for_its_request_until_it_expires():
    value = sign(KEY, WHO, "GET", PATH, now=1000)
    assert verify(KEY, value, "GET", PATH, now=1000) == WHO
    assert verify(KEY, value, "get", PATH, now=1000 + LIFETIME_S) == WHO
    assert verify(KEY, value, "GET", PATH, now=1001 + LIFETIME_S) is None


def test_it_does_not_carry_over_to_another_method_or_path():
    value = sign(KEY, WHO, "GET", PATH, now=1000)
    assert verify(KEY, value, "DELETE", PATH, now=1000) is None
    assert verify(KEY, value, "GET", "/v1/files/file-other/content", now=1000) is None
    assert verify(KEY, value, "GET", PATH + "?x=1", now=1000) is None


def test_another_key_or_any_edit_is_refused():
    value = sign(KEY, WHO, "POST", "/v1/files", now=1000)
    assert verify(b"x" * 32, value, "POST", "/v1/files", now=1000) is None
    assert verify(KEY, value.replace(_b64("ws-1"), _b64("ws-2")), "POST", "/v1/files", now=1000) is None
    assert verify(KEY, value.replace(".1060.", ".9999."), "POST", "/v1/files", now=1000) is None
    assert verify(KEY, value[:-2], "POST", "/v1/files", now=1000) is None


def test_no_key_or_a_malformed_value_asserts_nothing():
    assert verify(b"", sign(b"", WHO, "GET", PATH, now=0), "GET", PATH, now=0) is None
    for value in ("", "garbage", "files-v1.x.a.b.c.d.mac", "v1.1060.r.ws.m.mac"):
        assert verify(KEY, value, "GET", PATH, now=0) is None


def test_an_attempt_grant_is_not_an_identity_assertion():
    """Signed with the same key by mistake, the attempt grant's format still does not verify."""
    from ext_proc.attempt_grant import Grant
    from ext_proc.attempt_grant import sign as grant_sign

    grant = grant_sign(KEY, Grant("r", "ws-1", "member-1"), expires_at=10**10)
    assert verify(KEY, grant, "GET", PATH, now=0) is None


def test_any_character_survives_and_an_empty_field_is_refused():
    dotted = Identity("r.1", "ws.1", "m\n", "k/=")
    assert verify(KEY, sign(KEY, dotted, "GET", PATH, now=0), "GET", PATH, now=0) == dotted
    with pytest.raises(ValueError):
        sign(KEY, Identity("r", "", "m", "k"), "GET", PATH)
