"""The signed link from an emulated n's extra choice to the client's request: only ext_proc can
make one, for the workspace and key it names, until it expires; nothing else is a link."""

from __future__ import annotations

from infery_proto.signed_token import _b64

from ext_proc import attempt_grant
from ext_proc.parent_link import Parent, sign, verify

KEY = b"k" * 32
PARENT = Parent("01a23c3770a44154bf9fce8fddc11220", "ws-1", "key-1")


def test_a_link_names_its_request_for_its_workspace_and_key_until_it_expires():
    value = sign(KEY, PARENT, expires_at=1000)
    assert verify(KEY, value, "ws-1", "key-1", now=999) == PARENT.request_id
    assert verify(KEY, value, "ws-1", "key-1", now=1001) == ""
    # another workspace's or another key's request cannot carry it
    assert verify(KEY, value, "ws-2", "key-1", now=0) == ""
    assert verify(KEY, value, "ws-1", "key-2", now=0) == ""


def test_a_forged_or_altered_link_is_no_link():
    value = sign(KEY, PARENT, expires_at=1000)
    assert verify(b"x" * 32, sign(b"x" * 32, PARENT, 1000), "ws-1", "key-1", now=0) == PARENT.request_id
    assert verify(KEY, sign(b"x" * 32, PARENT, 1000), "ws-1", "key-1", now=0) == ""  # another key's
    other = value.replace(_b64(PARENT.request_id), _b64("01a23c3770a44154bf9fce8fddc11221"))
    assert verify(KEY, other, "ws-1", "key-1", now=0) == ""
    assert verify(KEY, value.replace(".1000.", ".9999."), "ws-1", "key-1", now=0) == ""
    assert verify(KEY, "", "ws-1", "key-1", now=0) == ""
    assert verify(KEY, "01a23c3770a44154bf9fce8fddc11220", "ws-1", "key-1", now=0) == ""
    assert verify(b"", sign(b"", PARENT, 1000), "ws-1", "key-1", now=0) == ""


def test_an_attempt_grant_under_the_same_key_is_not_a_link():
    """Both are signed with the data plane's key: the audience keeps them apart."""
    grant = attempt_grant.sign(KEY, attempt_grant.Grant(PARENT.request_id, "ws-1", "key-1"), 1000)
    assert verify(KEY, grant, "ws-1", "key-1", now=0) == ""
    assert attempt_grant.verify(KEY, sign(KEY, PARENT, 1000), now=0) is None
