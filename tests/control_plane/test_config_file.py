"""gateway.yaml: idempotent upserts, ${ENV} expansion, pinned key secrets, atomic failure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.config_file import ConfigError, apply_config, expand_env
from control_plane.store.changes import current_revision
from control_plane.store.snapshot import Snapshot, load_snapshot

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway.example.yaml"
DEMO_KEY = "inf_demo_0123456789abcdefghij"

CONFIG = """
providers:
  - name: openai
    kind: openai
    base_url: ${OPENAI_BASE_URL:-https://api.openai.com/v1}
    api_key: ${OPENAI_API_KEY}
models:
  - {slug: gpt-4o, provider: openai}
  - slug: cheap
    provider: openai
    upstream_model: gpt-4o-mini
    prices: {input_per_mtok: 0.10, output_per_mtok: "0.40"}
routes:
  - {slug: gpt-4o, fallbacks: [cheap], retry_on: [429, 5xx]}
workspaces:
  - name: demo
    rpm: ${DEMO_RPM:-60}
    price_multiplier: 1.10
    members: [{email: dev@example.com, role: owner}]
    keys:
      - {name: pinned, member: dev@example.com, secret: "${DEMO_KEY}"}
      - {name: generated, member: dev@example.com}
"""
ENV = {"OPENAI_API_KEY": "sk-from-env", "DEMO_KEY": DEMO_KEY}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def snapshot(session_factory: sessionmaker[Session]) -> Snapshot:
    with session_factory() as session:
        return load_snapshot(session)


def test_apply_is_idempotent(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    path = write(tmp_path, CONFIG)
    first = apply_config(path, session_factory, ENV)
    assert first.changed
    assert [(k.workspace, k.name) for k in first.generated_keys] == [("demo", "generated")]
    before = snapshot(session_factory)
    assert before.revision == 1

    second = apply_config(path, session_factory, ENV)
    assert not second.changed and second.generated_keys == []
    after = snapshot(session_factory)
    assert after == before  # same protos, same revision

    (provider,) = after.providers
    assert (provider.base_url, provider.api_key) == ("https://api.openai.com/v1", "sk-from-env")
    models = {m.slug: m for m in after.models}
    assert models["gpt-4o"].prices.input_per_mtok == "2.50"
    assert (models["cheap"].prices.input_per_mtok, models["cheap"].prices.output_per_mtok) == ("0.10", "0.40")
    (route,) = after.routes
    assert list(route.retry_on) == ["429", "5xx"] and list(route.fallbacks) == ["cheap"]
    (workspace,) = after.workspaces
    assert (workspace.rpm, workspace.price_multiplier) == (60, "1.10")
    hashes = {k.name: k.key_hash for k in after.api_keys}
    assert hashes["pinned"] == hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    assert hashes["generated"] == hashlib.sha256(first.generated_keys[0].secret.encode()).hexdigest()


def test_changed_values_are_updated_in_place(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    apply_config(write(tmp_path, CONFIG), session_factory, ENV)
    workspace_id = snapshot(session_factory).workspaces[0].id
    result = apply_config(
        write(tmp_path, CONFIG), session_factory, ENV | {"DEMO_RPM": "5", "OPENAI_API_KEY": "sk-2"}
    )
    assert result.changed
    after = snapshot(session_factory)
    assert after.revision == 2  # one transaction, one bump
    assert after.workspaces[0].id == workspace_id and after.workspaces[0].rpm == 5
    assert after.providers[0].api_key == "sk-2"
    assert len(after.api_keys) == 2


def test_env_expansion() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand_env({"x": ["${A}", "a${A}b${B:-2}"], "n": 3}, env) == {"x": ["1", "a1b2"], "n": 3}
    assert expand_env("${EMPTY:-fallback}|${EMPTY}|$${A}", env) == "fallback||${A}"
    with pytest.raises(ConfigError, match="MISSING"):
        expand_env("${MISSING}", env)


def test_invalid_files_apply_nothing(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    bad_reference = CONFIG.replace("fallbacks: [cheap]", "fallbacks: [nope]")
    with pytest.raises(ConfigError, match="nope"):
        apply_config(write(tmp_path, bad_reference), session_factory, ENV)
    with session_factory() as session:
        assert current_revision(session) == 0
    assert snapshot(session_factory).providers == ()

    with pytest.raises(ConfigError, match="api_kee"):
        apply_config(write(tmp_path, CONFIG.replace("api_key:", "api_kee:")), session_factory, ENV)
    with pytest.raises(ConfigError, match="DEMO_KEY"):
        apply_config(write(tmp_path, CONFIG), session_factory, {"OPENAI_API_KEY": "x"})
    with pytest.raises(ConfigError, match="secret"):
        apply_config(write(tmp_path, CONFIG), session_factory, ENV | {"DEMO_KEY": "short"})
    with pytest.raises(ConfigError):
        apply_config(write(tmp_path, "providers: [unclosed"), session_factory, ENV)
    with pytest.raises(ConfigError):
        apply_config(tmp_path / "missing.yaml", session_factory, ENV)


def test_revoked_pinned_key_stays_revoked(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    from control_plane.resources import keys, workspaces
    from control_plane.store.changes import mutation

    path = write(tmp_path, CONFIG)
    apply_config(path, session_factory, ENV)
    with mutation(session_factory) as session:
        workspace = workspaces.get(session, "demo")
        pinned = keys.find_by_hash(session, keys.hash_secret(DEMO_KEY))
        assert pinned is not None
        keys.revoke(session, workspace, pinned.id)
    apply_config(path, session_factory, ENV)
    assert [k.name for k in snapshot(session_factory).api_keys] == ["generated"]


def test_example_file_applies(session_factory: sessionmaker[Session]) -> None:
    env = {
        "OPENAI_API_KEY": "sk-a",
        "ANTHROPIC_API_KEY": "sk-b",
        "GEMINI_API_KEY": "g",
        "DEMO_INF_KEY": DEMO_KEY,
    }
    result = apply_config(EXAMPLE, session_factory, env)
    assert result.changed
    state = snapshot(session_factory)
    slugs = {m.slug for m in state.models}
    assert {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2-5-flash", "llama-3-1-8b"} <= slugs
    assert not apply_config(EXAMPLE, session_factory, env).changed
