"""docker-compose.yml: ext_proc on loopback TCP behind its token, mutual TLS to the control plane."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

from control_plane.batches.settings import BatchSettings
from control_plane.files.settings import FilesSettings
from control_plane.settings import Settings
from ext_proc.settings import ExtProcSettings
from infery.certs import generate

REPO = Path(__file__).resolve().parents[2]
ENVOY = Path(sys.executable).parent / "envoy"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _resolve(env: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    # ${NAME:-default}: the default when ``values`` has no NAME (traces, off unless set).
    pattern = r"\$\{(\w+)(?::-([^}]*))?[^}]*\}"
    return {k: re.sub(pattern, lambda m: values.get(m.group(1), m.group(2)), v) for k, v in env.items()}


def test_replica_bootstrap_carries_no_secret_and_envoy_accepts_it(tmp_path: Path) -> None:
    envoy = SERVICES["envoy-1"]
    script = envoy["command"][2]
    bootstrap_cmd, _, rest = script.partition(" > ")
    out = rest.split(" && ")[0].strip()
    token = "compose-token-" + os.urandom(8).hex()
    pki = generate(tmp_path / "pki", ["control-plane"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERY_")}
    env |= _resolve(envoy["environment"], {"INFERY_EXT_PROC_TOKEN": token})
    # The files of the xds-tls-client volume, here.
    for name, path in (("CA", pki.client.ca), ("CERT", pki.client.cert), ("KEY", pki.client.key)):
        assert env[f"INFERY_XDS_TLS_{name}_FILE"].startswith("/xds-tls/")
        env[f"INFERY_XDS_TLS_{name}_FILE"] = str(path)
    env["INFERY_ENVOY_BOOTSTRAP"] = str(REPO / "envoy" / "bootstrap.yaml")
    argv = shlex.split(bootstrap_cmd)
    assert argv[:2] == ["infery", "bootstrap"]
    token_file = tmp_path / "ext_proc_token.yaml"
    admin_socket = tmp_path / "admin.sock"
    argv = [str(token_file) if a.endswith("ext_proc_token.yaml") else a for a in argv]
    argv = [str(admin_socket) if a.endswith("envoy-admin.sock") else a for a in argv]
    run = subprocess.run(
        [sys.executable, "-m", "infery.cli", *argv[1:]], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert token not in run.stdout  # the token is in the owner-only SDS file only
    assert token in token_file.read_text() and (token_file.stat().st_mode & 0o777) == 0o600
    bootstrap = yaml.safe_load(run.stdout)
    assert bootstrap["admin"]["address"]["pipe"]["path"] == str(admin_socket)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert "transport_socket" in clusters["infery_xds"]
    filters = clusters["infery_ext_proc"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["http_filters"]
    assert filters[0]["name"] == "envoy.filters.http.credential_injector"
    # ext_proc listens on TCP (no --uds) and has the same token to check.
    ext_proc = SERVICES["ext-proc-1"]
    assert "--uds" not in ext_proc["command"]
    assert ext_proc["environment"]["INFERY_EXT_PROC_TOKEN"] == envoy["environment"]["INFERY_EXT_PROC_TOKEN"]
    if ENVOY.exists():
        config = tmp_path / out.split("/")[-1]
        config.write_text(run.stdout)
        check = subprocess.run(
            [str(ENVOY), "-c", str(config), "--mode", "validate"], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_control_plane_serves_mutual_tls_with_the_server_half() -> None:
    cp = SERVICES["control-plane"]["environment"]
    assert {cp[f"INFERY_XDS_TLS_{n}_FILE"] for n in ("CA", "CERT", "KEY")} == {
        "/xds-tls/ca.pem",
        "/xds-tls/server.pem",
        "/xds-tls/server-key.pem",
    }
    assert "xds-tls-server:/xds-tls:ro" in SERVICES["control-plane"]["volumes"]
    for name in ("ext-proc-1", "ext-proc-2", "envoy-1", "envoy-2"):
        assert "xds-tls-client:/xds-tls:ro" in SERVICES[name]["volumes"]
    assert "INFERY_XDS_TOKEN" not in (REPO / "docker-compose.yml").read_text()


def test_compose_file_follows_the_compose_spec() -> None:
    """Against the Compose Specification's own JSON Schema (vendored: tests/deploy/schemas/)."""
    schema = json.loads((Path(__file__).with_name("schemas") / "compose-spec.json").read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft7Validator(schema).iter_errors(COMPOSE)
    ]
    assert errors == []


def test_every_infery_service_runs_the_one_image_and_restarts() -> None:
    built = {name: svc for name, svc in SERVICES.items() if "build" in svc}
    assert {svc["image"] for svc in built.values()} == {"${INFERY_IMAGE:-infery-gateway:latest}"}
    long_running = [name for name in SERVICES if name != "xds-certs"]
    assert all(SERVICES[name].get("restart") == "unless-stopped" for name in long_running)


def test_no_secret_is_written_in_the_compose_file() -> None:
    """Passwords, tokens and keys come from the environment (`${VAR:?...}`), never literal values."""
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|DATABASE_URL")
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            if secretish.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r".*\$\{\w+:\?[^}]+\}.*", str(value)), (name, key, value)
                literal = re.sub(r"\$\{[^}]+\}", "", str(value))
                assert not re.search(r":[^/@]+@", literal), (name, key, value)  # no user:password@ left


def test_environment_variables_are_ones_the_code_reads() -> None:
    """Each Infery service's INFERY_* variables are read by its process's settings model."""
    models = {
        "control_plane": Settings,
        "control_plane.files": FilesSettings,
        "control_plane.batches": BatchSettings,
        "ext_proc": ExtProcSettings,
    }
    checked = set()
    for name, svc in SERVICES.items():
        command = svc.get("command") or []
        module = command[2] if command[:2] == ["python", "-m"] else None
        if module not in models:
            continue
        read = {variable for variable, _, _ in models[module].variables()}
        # The image's entrypoint reads these (infery/entrypoint.py), whatever the command.
        read |= {"INFERY_HEALTH_URL", "INFERY_HEALTH_PORT"}
        unread = {key for key in svc.get("environment") or {} if key.startswith("INFERY_")} - read
        assert unread == set(), f"{name}: nothing reads {sorted(unread)}"
        checked.add(module)
    assert checked == set(models)
