"""The data plane keeps serving without the control plane, and no usage record is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from infery.stack import Stack, port_open
from tests.e2e.support import SIM_KEY, Admin, eventually, new_tenant, start_gateway

HI = [{"role": "user", "content": "hello"}]


@pytest.fixture
def own_gateway(tmp_path, openai_sim) -> Iterator[Stack]:
    # Loopback TCP to ext_proc, as in docker-compose (everything else here runs on Unix sockets).
    # Two processes share their limits and idempotency keys through Redis (required with more than one).
    stack = start_gateway(
        tmp_path, ext_procs=2, ext_proc_uds=False, INFERY_REDIS_URL="redis://127.0.0.1:6379/11"
    )
    try:
        yield stack
    finally:
        stack.stop()


def test_outage_delays_usage_records_and_loses_none(own_gateway: Stack, openai_sim):
    admin = Admin(own_gateway.admin_url)
    admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
    admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
    tenant = new_tenant(admin, own_gateway, "outage")
    client = tenant.client(own_gateway)
    ids = []

    def call() -> None:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        assert raw.parse().choices[0].message.content
        ids.append(raw.headers["x-request-id"])

    for _ in range(5):
        call()
    own_gateway.stop_process("control_plane")
    # Data plane keeps serving on its last configuration, streams included.
    for _ in range(10):
        call()
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    assert chunks[-1].model_extra["credits_used"] >= 0
    own_gateway.start_control_plane()
    admin = Admin(own_gateway.admin_url)
    eventually(lambda: all(admin.usage_record(i) for i in ids), timeout=15)
    rows = admin.usage(workspace="outage", group_by="key")
    assert rows[0]["requests"] == len(ids) + 1  # each request stored exactly once
    # Configuration changes flow again after the restart.
    admin.model("gpt-4o", "sim", "gpt-4o")
    eventually(lambda: "gpt-4o" in [m.id for m in client.models.list()], timeout=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="not-there", messages=HI)


def test_without_ext_proc_requests_get_the_envelope_and_recover(tmp_path, openai_sim):
    """ext_proc gone: 503 gateway_unavailable, never a bare error; back as soon as it is."""
    stack = start_gateway(tmp_path)  # one ext_proc, on a Unix socket
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        client = new_tenant(admin, stack, "no-ext-proc").client(stack)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices
        (name,) = [n for n in stack.processes if n.startswith("ext_proc")]
        port = int(name.removeprefix("ext_proc_"))
        # Envoy uses the Unix socket, and ext_proc then has no TCP port (changed on purpose, issue 11:
        # whoever reaches ext_proc can have provider keys).
        assert not port_open(port) and Path(stack.ext_proc_socket(port)).is_socket()
        stack.stop_process(name)
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as err:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=stream)
            assert err.value.status_code == 503
            assert err.value.body["code"] == "gateway_unavailable"  # type: ignore[index]
        stack.start_ext_proc(port)
        eventually(lambda: bool(client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices))
    finally:
        stack.stop()
