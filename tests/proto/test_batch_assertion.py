"""The batch line credential: what it asserts, and everything that breaks it."""

from __future__ import annotations

from infery_proto import batch_assertion
from infery_proto.batch_assertion import BatchLine
from infery_proto.signed_token import _b64

KEY = b"k" * 32
LINE = BatchLine("ws", "key", "member", "batch_1", "id.with.dots/and spaces", "/v1/chat/completions")


def test_a_credential_asserts_its_line_until_it_expires():
    value = batch_assertion.sign(KEY, LINE, now=1000)
    assert batch_assertion.verify(KEY, value, now=1000) == LINE
    assert batch_assertion.verify(KEY, value, now=1000 + batch_assertion.LIFETIME_S) == LINE
    assert batch_assertion.verify(KEY, value, now=1001 + batch_assertion.LIFETIME_S) is None


def test_another_key_or_any_changed_field_breaks_it():
    value = batch_assertion.sign(KEY, LINE, now=1000)
    assert batch_assertion.verify(b"x" * 32, value, now=1000) is None
    payload, _, mac = value.rpartition(".")
    parts = payload.split(".")
    for index in range(1, len(parts)):
        changed = list(parts)
        changed[index] = _b64("other") if index > 1 else "9999999999"
        assert batch_assertion.verify(KEY, ".".join(changed) + "." + mac, now=1000) is None, index
    assert batch_assertion.verify(KEY, "", now=1000) is None
    assert batch_assertion.verify(b"", value, now=1000) is None


def test_an_attempt_grant_or_a_files_identity_never_verifies_as_a_line():
    from infery_proto import identity_assertion

    files = identity_assertion.sign(
        KEY, identity_assertion.Identity("r", "ws", "m", "k"), "POST", "/v1/files"
    )
    assert batch_assertion.verify(KEY, files) is None


def test_the_idempotency_key_is_the_lines_whoever_sends_it():
    key = batch_assertion.idempotency_key("batch_1", "a")
    assert key == batch_assertion.idempotency_key("batch_1", "a")
    assert key != batch_assertion.idempotency_key("batch_1", "b")
    assert key != batch_assertion.idempotency_key("batch_2", "a")
    assert batch_assertion.idempotency_key("a\nb", "c") != batch_assertion.idempotency_key("a", "b\nc")
    assert len(key) <= 255
