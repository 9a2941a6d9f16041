"""A provider's key only ever goes to the host it was given for, and never to a cloud metadata service."""

from __future__ import annotations

import pytest
from cp_support import add_provider, assert_error
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.store.tables import Provider


def _stored(session_factory: sessionmaker[Session]) -> Provider:
    with session_factory() as session:
        row = session.get(Provider, "openai")
        assert row is not None
        return row


def test_a_new_host_needs_the_key_again(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    add_provider(client, api_key="sk-stored")
    moved = client.put("/admin/v1/providers/openai", json={"base_url": "https://attacker.example/v1"})
    assert_error(moved, 400, "invalid_request", "api_key")
    row = _stored(session_factory)
    assert (row.base_url, row.api_key) == ("https://api.openai.com/v1", "sk-stored")

    # The same host again (a GET answer PUT back) keeps the key; a new host with its key is fine.
    same = client.put("/admin/v1/providers/openai", json={"base_url": "https://api.openai.com/v1/"})
    assert same.status_code == 200 and same.json()["has_api_key"] is True
    moved = client.put(
        "/admin/v1/providers/openai", json={"base_url": "https://proxy.example/v1", "api_key": "sk-proxy"}
    )
    assert moved.status_code == 200, moved.text
    assert (_stored(session_factory).base_url, _stored(session_factory).api_key) == (
        "https://proxy.example/v1",
        "sk-proxy",
    )
    # A provider without a key has nothing to leak: its host may change alone.
    client.put("/admin/v1/providers/openai", json={"api_key": None})
    assert (
        client.put("/admin/v1/providers/openai", json={"base_url": "https://other.example"}).status_code
        == 200
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.1.1:8080/v1",
        "http://[fe80::1]/v1",
        "http://[fd00:ec2::254]/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://METADATA.GOOGLE.INTERNAL./v1",
        "http://metadata/v1",
        "http://2852039166/v1",  # 169.254.169.254 as one number
        "http://0xa9.0xfe.0xa9.0xfe/v1",
        "http://100.100.100.200/v1",  # Alibaba Cloud's metadata service
    ],
)
def test_metadata_and_link_local_hosts_are_refused(client: TestClient, url: str) -> None:
    assert_error(
        client.post(
            "/admin/v1/providers",
            json={"name": "meta", "kind": "openai", "base_url": url, "api_key": "sk-x"},
        ),
        400,
        "invalid_request",
        "base_url",
    )
    add_provider(client)
    assert_error(
        client.put("/admin/v1/providers/openai", json={"base_url": url, "api_key": "sk-x"}),
        400,
        "invalid_request",
        "base_url",
    )


def test_ordinary_private_hosts_stay_allowed(client: TestClient) -> None:
    """Self-hosted OpenAI-compatible servers live on private addresses: only metadata hosts are refused."""
    for i, url in enumerate(["http://127.0.0.1:9000/v1", "http://10.0.0.5/v1", "http://vllm.internal:8000"]):
        add_provider(client, name=f"p{i}", base_url=url)
