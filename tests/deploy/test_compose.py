"""docker-compose.yml: ext_proc on loopback TCP behind its token, mutual TLS to the control plane."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from infery.certs import generate

REPO = Path(__file__).resolve().parents[2]
ENVOY = Path(sys.executable).parent / "envoy"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _resolve(env: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    return {k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values[m.group(1)], v) for k, v in env.items()}


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
