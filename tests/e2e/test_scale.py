"""Configuration at scale (issue 18): past ~17,000 keys the data plane used to freeze on its
last configuration (gRPC's 4 MiB limit) and a restarted ext_proc answered 503 to everything.

The keys are created through the store in one statement (the admin API would take minutes);
everything else goes through the real admin API, Envoy and ext_proc.
"""

from __future__ import annotations

import openai
from sqlmodel import col, select

from control_plane.resources.bulk_keys import create_keys
from control_plane.store.db import open_store
from control_plane.store.tables import Workspace
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, eventually, new_tenant, start_gateway

KEYS = 25_000
HI = [{"role": "user", "content": "hi"}]


def _works(gateway_url: str, secret: str) -> bool:
    client = openai.OpenAI(base_url=gateway_url, api_key=secret, max_retries=0)
    return bool(client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices)


def _refused(gateway_url: str, secret: str) -> bool:
    try:
        _works(gateway_url, secret)
    except openai.AuthenticationError as exc:
        return exc.status_code == 401 and exc.body["code"] == "invalid_api_key"  # type: ignore[index]
    return False


def test_25k_keys_a_revocation_reaches_the_data_plane_and_a_restarted_ext_proc_serves_them(
    tmp_path, openai_sim: SimulatorProcess
):
    stack = start_gateway(tmp_path)
    engine = None
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        tenant = new_tenant(admin, stack, "scale")
        engine, sessions = open_store(stack.control_plane_env()["INFERY_DATABASE_URL"])
        with sessions() as session:
            workspace = session.exec(select(Workspace).where(col(Workspace.name) == "scale")).one()
        created = create_keys(sessions, workspace.id, tenant.member_id, KEYS)
        (first_id, first), (_, middle), (_, last) = created[0], created[KEYS // 2], created[-1]

        # One revision, delivered in ~100 delta responses in no particular order: the push is
        # whole once the first, the middle and the last key all work.
        eventually(lambda: all(_works(stack.base_url, k) for k in (last, middle, first)), timeout=30)

        admin.call("DELETE", f"/workspaces/scale/keys/{first_id}")
        eventually(lambda: _refused(stack.base_url, first), timeout=10)

        (name,) = [n for n in stack.processes if n.startswith("ext_proc")]
        stack.stop_process(name)
        stack.start_ext_proc(int(name.removeprefix("ext_proc_")))  # returns once it says it is ready
        assert _works(stack.base_url, middle)  # at once: ready means the whole configuration is in force
        assert _refused(stack.base_url, first)
        assert _works(stack.base_url, tenant.key)
    finally:
        if engine is not None:
            engine.dispose()
        stack.stop()
