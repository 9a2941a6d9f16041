"""deploy/kubernetes agrees with itself and with the code it runs, without a cluster.

Flags, environment variables, ports and defaults are read from the code (each
program's ``--help``, its sources and settings, ``infery bootstrap`` itself), never
restated here, so a change on either side that breaks the deployment fails here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from infery_proto.settings import InferySettings
from opentelemetry.sdk import environment_variables as otel_environment_variables

from control_plane.batches.settings import BatchSettings
from control_plane.config_file import apply_config
from control_plane.files.settings import FilesSettings
from control_plane.settings import Settings
from control_plane.store.db import open_store
from ext_proc.settings import ExtProcSettings
from infery.certs import generate
from infery.settings import CliSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
ROOTS = [K8S, K8S / "dev"]  # the kustomizations a user applies
ENVOY = Path(sys.executable).parent / "envoy"
POD_NAME = "infery-gateway-7d9c5-x2x8q"
WORKLOADS = ("Deployment", "StatefulSet")

Obj = dict[str, Any]


# --- reading the manifests -----------------------------------------------------------------


def documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomize(root: Path) -> tuple[list[Obj], dict[str, dict[str, Path]]]:
    """A kustomization's objects and generated ConfigMaps ({name: {key: file}}), names unhashed."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    objects: list[Obj] = []
    configmaps: dict[str, dict[str, Path]] = {}
    for entry in spec.get("resources", []):
        target = (root / entry).resolve()
        assert target.exists(), f"{root}/kustomization.yaml lists missing {entry}"
        if target.is_dir():
            sub_objects, sub_configmaps = kustomize(target)
            objects += sub_objects
            configmaps |= sub_configmaps
        else:
            objects += documents(target)
    for generator in spec.get("configMapGenerator", []):
        files: dict[str, Path] = {}
        for entry in generator.get("files", []):
            key, _, rel = entry.rpartition("=")
            assert (root / rel).is_file(), f"{root}/kustomization.yaml generates from missing {rel}"
            files[key or Path(rel).name] = root / rel
        configmaps[generator["name"]] = files
    names = {o["metadata"]["name"] for o in objects if o["kind"] in WORKLOADS}
    for replicas in spec.get("replicas", []):
        assert replicas["name"] in names, f"{root}: replicas for unknown {replicas['name']}"
    return objects, configmaps


def template_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(objects: list[Obj], name: str) -> Obj:
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(pod: Obj, name: str) -> Obj:
    (found,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    return found


def all_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield pod, c


def literal_env(c: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def load_drain() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infery_drain", BASE / "scripts" / "drain.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PRODUCTION, CONFIGMAPS = kustomize(K8S)
SECRET = documents(K8S / "secret.example.yaml")[0]
GATEWAY = pod_spec(PRODUCTION, "infery-gateway")
CONTROL_PLANE = pod_spec(PRODUCTION, "infery-control-plane")


def control_plane_env() -> dict[str, str]:
    """The control plane container's environment, secrets filled from the example."""
    env = literal_env(container(CONTROL_PLANE, "control-plane"))
    for e in container(CONTROL_PLANE, "control-plane")["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[e["name"]] = SECRET["stringData"][ref["key"]]
    return env


def init_bootstrap_command() -> tuple[list[str], str]:
    """The init container's `infery bootstrap ... > FILE`: its argv (env expanded) and FILE."""
    init = container(GATEWAY, "envoy-bootstrap")
    assert init["command"][:2] == ["sh", "-c"]
    match = re.fullmatch(r"(?P<argv>[^>]+)>\s*(?P<out>\S+)", init["command"][2])
    assert match, init["command"]
    values = {"POD_NAME": POD_NAME, **literal_env(init)}
    for e in init.get("env", []):
        if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[e["name"]] = POD_NAME
    argv = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in shlex.split(match["argv"])]
    return argv, match["out"]


# --- the files -----------------------------------------------------------------------------


def test_every_yaml_document_parses() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    assert len(paths) >= 8
    generated = {p.resolve() for files in CONFIGMAPS.values() for p in files.values()}
    for path in paths:
        docs = documents(path)
        assert docs, f"{path} is empty"
        if path.name == "kustomization.yaml" or path.resolve() in generated:
            continue
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: {doc}"
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "infery", f"{path}: {doc['metadata']}"


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_kustomizations_list_existing_files(root: Path) -> None:
    objects, configmaps = kustomize(root)
    assert not [o for o in objects if o["kind"] == "Secret"], "real secrets never go through kustomize"
    # Every manifest in base/ is applied: none forgotten, none applied twice.
    listed = [p.resolve() for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"]
    base_resources = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted((BASE / r).resolve() for r in base_resources)
    mounted = {
        v["configMap"]["name"]
        for o in objects
        if o["kind"] in WORKLOADS
        for v in o["spec"]["template"]["spec"].get("volumes", [])
        if "configMap" in v
    }
    assert mounted == set(configmaps)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_kubectl_kustomize_builds_the_same_objects(root: Path) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    objects, configmaps = kustomize(root)

    def names(objs: list[Obj]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objs}

    generated = {("ConfigMap", name) for name in configmaps}
    hashed = {(k, re.sub(r"-[a-z0-9]{10}$", "", n) if k == "ConfigMap" else n) for k, n in names(built)}
    assert hashed == names(objects) | generated
    assert all(o["metadata"].get("namespace") == "infery" for o in built if o["kind"] != "Namespace")


# --- wiring between objects ----------------------------------------------------------------


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_labels_and_selectors_match(root: Path) -> None:
    objects, _ = kustomize(root)
    workloads = [o for o in objects if o["kind"] in WORKLOADS]

    def selected(selector: dict[str, str]) -> list[Obj]:
        return [w for w in workloads if selector.items() <= template_labels(w).items()]

    for w in workloads:
        labels = template_labels(w)
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert selected(w["spec"]["selector"]["matchLabels"]) == [w], "selectors must not overlap"
        for spread in w["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    for svc in (o for o in objects if o["kind"] == "Service"):
        (target,) = selected(svc["spec"]["selector"])
        ports = [p for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        for port in svc["spec"]["ports"]:
            assert any(port["targetPort"] in (p.get("name"), p["containerPort"]) for p in ports), port
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        (target,) = selected(pdb["spec"]["selector"]["matchLabels"])
        spec = pdb["spec"]
        assert spec.get("maxUnavailable", 0) >= 1 or spec["minAvailable"] < target["spec"]["replicas"]


def test_secret_and_configmap_references_resolve() -> None:
    keys = set(SECRET["stringData"])
    used: set[str] = set()
    for pod, c in all_containers(PRODUCTION):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == SECRET["metadata"]["name"] and ref["key"] in keys, ref
                used.add(ref["key"])
        volumes = {v["name"] for v in pod.get("volumes", [])}
        assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, c["name"]
    assert used == keys, "the example Secret has keys nothing reads"


# --- the code the containers run -------------------------------------------------------------


def help_flags(argv: list[str]) -> set[str]:
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", out.stdout + out.stderr))


def used_flags(argv: list[str]) -> set[str]:
    return {arg.split("=")[0] for arg in argv if arg.startswith("--")}


def test_commands_use_flags_the_programs_accept() -> None:
    ext_proc = container(GATEWAY, "ext-proc")["command"]
    assert ext_proc[:3] == ["python", "-m", "ext_proc"]
    assert used_flags(ext_proc) <= help_flags([sys.executable, "-m", "ext_proc"])
    # No flags: `python -m control_plane` reads only its environment.
    assert container(CONTROL_PLANE, "control-plane")["command"] == ["python", "-m", "control_plane"]
    argv, _ = init_bootstrap_command()
    assert argv[:2] == ["infery", "bootstrap"]
    assert used_flags(argv) <= help_flags([sys.executable, "-m", "infery.cli", "bootstrap"])
    envoy = container(GATEWAY, "envoy")["command"]
    assert envoy[0] == "envoy"
    if ENVOY.exists():
        assert used_flags(envoy) <= help_flags([str(ENVOY)])
    drain = load_drain()
    for c in GATEWAY["containers"]:
        hook = c["lifecycle"]["preStop"]["exec"]["command"]
        assert hook[0] == "python"
        drain.parser().parse_args(hook[2:])  # exits on an unknown flag


def envoy_stats_listener() -> Obj:
    """The bootstrap's stats-only listener (the init container renders from this template)."""
    bootstrap = yaml.safe_load((REPO / "envoy" / "bootstrap.yaml").read_text())
    (listener,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "infery_stats"]
    return listener  # type: ignore[no-any-return]


def source_of(package: str) -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / package).rglob("*.py")))


def strings(value: Any) -> Iterator[str]:
    """Every string value in a YAML document: where the control plane expands ${VAR}."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


OTEL_VARIABLES = {
    value for name, value in vars(otel_environment_variables).items() if name.startswith("OTEL_")
}


def test_environment_variables_are_ones_the_code_reads() -> None:
    # Changed on purpose (issue 16): each process reads its INFERY_* variables through one settings
    # model, so "the code reads it" means "its model has it" rather than "its source names it".
    models: dict[str, type[InferySettings]] = {
        "control-plane": Settings,
        "files": FilesSettings,  # control_plane/files/
        "batch-worker": BatchSettings,  # control_plane/batches/
        "ext-proc": ExtProcSettings,
        "envoy-bootstrap": CliSettings,
    }
    for pod, c in all_containers(PRODUCTION):
        mounted_text = "\n".join(
            "\n".join(strings(yaml.safe_load(path.read_text())))
            for v in pod.get("volumes", [])
            if "configMap" in v and any(m["name"] == v["name"] for m in c.get("volumeMounts", []))
            for path in CONFIGMAPS[v["configMap"]["name"]].values()
            if path.suffix == ".yaml"
        )
        command = " ".join(c["command"] + c.get("args", []))
        names = {e["name"] for e in c.get("env", [])}
        for name in names:
            if name.startswith("INFERY_"):
                read = {variable for variable, _, _ in models[c["name"]].variables()}
                assert name in read, f"{c['name']}: nothing reads {name}"
            elif name.startswith("OTEL_"):
                # OpenTelemetry's own variables: read by its SDK and infery_proto/otel.py, in the
                # processes that trace (ext_proc) or configure Envoy's tracer (the control plane).
                assert c["name"] in ("control-plane", "ext-proc"), f"{c['name']}: nothing reads {name}"
                assert name in OTEL_VARIABLES, f"{c['name']}: {name} is no OpenTelemetry variable"
            else:
                used = f"$({name})" in command or f"${{{name}}}" in mounted_text
                assert used, f"{c['name']}: nothing uses {name}"
        # Every ${VAR} without a default in a mounted config file's values is set.
        needed = set(re.findall(r"\$\{([A-Za-z_]\w*)\}", mounted_text))
        assert needed <= names, f"{c['name']} misses {needed - names}"


def test_gateway_yaml_applies_to_a_fresh_store(tmp_path: Path) -> None:
    _engine, sessions = open_store(f"sqlite:///{tmp_path / 'infery.db'}")
    result = apply_config(CONFIGMAPS["infery-config"]["gateway.yaml"], sessions, control_plane_env())
    assert result.changed
    mount = container(CONTROL_PLANE, "control-plane")["volumeMounts"][0]["mountPath"]
    assert control_plane_env()["INFERY_CONFIG"] == f"{mount}/gateway.yaml"


def test_ports_and_probes_agree_with_the_settings() -> None:
    env = control_plane_env()
    settings = Settings.from_env(env)
    listener = settings.listener()
    assert settings.host == listener.host == "0.0.0.0", "kubelet and Services reach pods on their pod IP"
    cp = container(CONTROL_PLANE, "control-plane")
    assert {p["name"]: p["containerPort"] for p in cp["ports"]} == {
        "admin": settings.admin_port,
        "xds": settings.xds_port,
    }
    assert '"/healthz"' in source_of("control_plane/api") and '"/readyz"' in source_of("control_plane/api")
    # Changed on purpose (issue 16): readiness is /readyz (store reachable, migrations current),
    # Envoy's is its /ready through the stats-only listener, ext_proc's its gRPC health service.
    for probe in ("startupProbe", "readinessProbe"):
        assert cp[probe]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert cp["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    envoy = container(GATEWAY, "envoy")
    stats_listener = envoy_stats_listener()
    stats_port = stats_listener["address"]["socket_address"]["port_value"]
    assert {p["name"]: p["containerPort"] for p in envoy["ports"]} == {
        "http": settings.listen_port,
        "envoy-stats": stats_port,
    }
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-stats"}
    ext_proc = container(GATEWAY, "ext-proc")
    probe = " ".join(ext_proc["readinessProbe"]["exec"]["command"])
    assert f'grpc_serving("unix:{option(ext_proc["command"], "--uds")}")' in probe
    metrics_port = int(option(ext_proc["command"], "--metrics-port"))
    assert {p["name"]: p["containerPort"] for p in ext_proc["ports"]} == {"metrics": metrics_port}
    # Scraping: annotations name the ports the processes serve /metrics on.
    for workload, port in (("infery-control-plane", settings.admin_port), ("infery-gateway", metrics_port)):
        notes = find(PRODUCTION, "Deployment", workload)["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == port
    for c in GATEWAY["containers"]:
        assert {"requests", "limits"} <= c["resources"].keys(), c["name"]


def test_init_container_renders_the_bootstrap_envoy_runs(tmp_path: Path) -> None:
    argv, out = init_bootstrap_command()
    envoy = container(GATEWAY, "envoy")
    assert option(envoy["command"], "-c") == out
    init_dirs = {m["name"]: m["mountPath"] for m in container(GATEWAY, "envoy-bootstrap")["volumeMounts"]}
    envoy_dirs = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    assert any(init_dirs.get(n) == d == str(Path(out).parent) for n, d in envoy_dirs.items())

    # Run it as the pod does: no INFERY_* but the container's; the image's bootstrap template.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERY_")}
    env |= literal_env(container(GATEWAY, "envoy-bootstrap"))
    env["INFERY_ENVOY_BOOTSTRAP"] = str(REPO / "envoy" / "bootstrap.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "infery.cli", *argv[1:]], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    bootstrap = yaml.safe_load(run.stdout)
    assert bootstrap["node"]["id"] == POD_NAME

    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}

    def endpoints(cluster: str) -> list[tuple[str, int]]:
        lb = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        addresses = [e["endpoint"]["address"]["socket_address"] for e in lb]
        return [(a["address"], a["port_value"]) for a in addresses]

    # xDS: a Service in front of the control plane's xds port; ext_proc uses the same one.
    ((xds_host, xds_port),) = endpoints("infery_xds")
    service = find(PRODUCTION, "Service", xds_host)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == xds_port]
    assert port["targetPort"] == "xds" and service["spec"]["selector"]["app.kubernetes.io/component"] == (
        "control-plane"
    )
    ext_proc = container(GATEWAY, "ext-proc")["command"]
    assert option(ext_proc, "--control-plane") == f"{xds_host}:{xds_port}"
    # Envoy reaches ext_proc on the Unix socket it listens on, in a volume both containers mount.
    socket_path = option(ext_proc, "--uds")
    lb = clusters["infery_ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["pipe"]["path"] for e in lb] == [socket_path]
    mounts = [
        {
            m["name"]
            for m in container(GATEWAY, name)["volumeMounts"]
            if m["mountPath"] == str(Path(socket_path).parent)
        }
        for name in ("ext-proc", "envoy")
    ]
    assert mounts[0] and mounts[0] == mounts[1]
    # Envoy's admin is a Unix socket of mode 600 (never TCP), in a volume of its own that the
    # preStop hooks of both containers reach it through.
    admin = bootstrap["admin"]["address"]
    assert set(admin) == {"pipe"} and admin["pipe"]["mode"] == 0o600
    admin_dir = str(Path(admin["pipe"]["path"]).parent)
    drain = load_drain()
    for c in GATEWAY["containers"]:
        hook = drain.parser().parse_args(c["lifecycle"]["preStop"]["exec"]["command"][2:])
        assert hook.admin == admin["pipe"]["path"]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == admin_dir]
        (volume,) = [v for v in GATEWAY["volumes"] if v["name"] == mount["name"]]
        assert "emptyDir" in volume and mount["name"] not in mounts[0]

    # The xDS cluster: mutual TLS with the client half of the infery-xds-tls Secret.
    tls = clusters["infery_xds"]["transport_socket"]["typed_config"]["common_tls_context"]
    files = {
        tls["tls_certificates"][0]["certificate_chain"]["filename"],
        tls["tls_certificates"][0]["private_key"]["filename"],
        tls["validation_context"]["trusted_ca"]["filename"],
    }
    assert _secret_files(GATEWAY, "envoy") >= files
    assert {Path(f).name for f in files} == {"client.pem", "client-key.pem", "ca.pem"}

    if ENVOY.exists():
        config = tmp_path / "envoy.yaml"
        # Validation loads the certificates: point at real ones, and the admin socket at a free path.
        pki = generate(tmp_path / "pki")
        rendered = run.stdout.replace(admin_dir, str(tmp_path))
        for f in files:
            rendered = rendered.replace(f, str(tmp_path / "pki" / Path(f).name))
        assert pki.client.key.exists()
        config.write_text(rendered)
        args = [str(config) if a == out else a for a in envoy["command"][1:]]
        check = subprocess.run([str(ENVOY), *args, "--mode", "validate"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def _secret_files(pod: Obj, name: str) -> set[str]:
    """Paths at which container ``name`` sees keys of Secret infery-xds-tls."""
    secrets = {
        v["name"]: v["secret"]
        for v in pod["volumes"]
        if v.get("secret", {}).get("secretName") == "infery-xds-tls"
    }
    return {
        f"{m['mountPath']}/{item['path']}"
        for m in container(pod, name)["volumeMounts"]
        if m["name"] in secrets
        for item in secrets[m["name"]]["items"]
    }


def test_control_plane_grpc_port_uses_mutual_tls_from_the_secret(tmp_path: Path) -> None:
    """Server half in the control plane, client half in the gateway pods; nobody gets both keys."""
    settings = Settings.from_env(control_plane_env())
    server = {settings.xds_tls_cert_file, settings.xds_tls_key_file, settings.xds_tls_ca_file}
    assert None not in server and _secret_files(CONTROL_PLANE, "control-plane") == server
    ext_proc = literal_env(container(GATEWAY, "ext-proc"))
    client = {ext_proc[f"INFERY_XDS_TLS_{n}_FILE"] for n in ("CERT", "KEY", "CA")}
    assert _secret_files(GATEWAY, "ext-proc") == client
    assert {Path(f).name for f in server} == {"server.pem", "server-key.pem", "ca.pem"}
    assert {Path(f).name for f in client} == {"client.pem", "client-key.pem", "ca.pem"}
    # The Secret's keys are the files `infery certs` writes, as secret.example.yaml says to create it.
    out = tmp_path / "xds-tls"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "infery.cli",
            "certs",
            "--out",
            str(out),
            "--server-name",
            "infery-control-plane",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert {p.name for p in out.iterdir()} == {Path(f).name for f in server | client}
    assert "infery certs --out xds-tls --server-name infery-control-plane" in (
        K8S / "secret.example.yaml"
    ).read_text().replace("\\\n", "")
    # The Service name ext_proc and Envoy dial is one the server certificate names.
    argv, _ = init_bootstrap_command()
    assert option(argv, "--xds-host") == "infery-control-plane"
    assert option(container(GATEWAY, "ext-proc")["command"], "--control-plane").startswith(
        "infery-control-plane:"
    )
    # No token on the gRPC port any more: the client certificate is the credential.
    assert "INFERY_XDS_TOKEN" not in SECRET["stringData"]


def test_image_provides_the_bootstrap_template() -> None:
    # The image installs the package (not editable): its wheel carries envoy/bootstrap.yaml as
    # infery/envoy/bootstrap.yaml (setup.py), which `infery bootstrap` reads outside a checkout
    # (tests/e2e/test_install_wheel.py runs it from such an install).
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^RUN /opt/infery/bin/pip install --no-deps /src$", dockerfile, re.M)
    assert "INFERY_ENVOY_BOOTSTRAP" not in dockerfile and "-e /src" not in dockerfile
    images = {c["image"] for _, c in all_containers(PRODUCTION)}
    assert images == {"infery-gateway:latest"}


# --- shutdown ------------------------------------------------------------------------------


def test_shutdown_outlasts_the_longest_stream() -> None:
    drain = load_drain()
    hooks = {
        c["name"]: drain.parser().parse_args(c["lifecycle"]["preStop"]["exec"]["command"][2:])
        for c in GATEWAY["containers"]
    }
    envoy, ext_proc = hooks["envoy"], hooks["ext-proc"]
    assert (envoy.role, ext_proc.role) == ("envoy", "ext-proc")
    listener = Settings.from_env(control_plane_env()).listener()
    assert envoy.max_wait >= listener.request_timeout_s, "preStop must wait out a stream's full timeout"
    assert ext_proc.max_wait > envoy.max_wait, "ext_proc must outlive Envoy"
    # After its hook, ext_proc stops its server (5 s grace) and delivers usage (5 s).
    assert GATEWAY["terminationGracePeriodSeconds"] >= ext_proc.max_wait + 10
    # The hooks run the script the drain ConfigMap mounts.
    (volume,) = [v for v in GATEWAY["volumes"] if v.get("configMap", {}).get("name") == "infery-drain"]
    for c in GATEWAY["containers"]:
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        script = c["lifecycle"]["preStop"]["exec"]["command"][1]
        assert Path(script).parent == Path(mount["mountPath"])
        assert Path(script).name in CONFIGMAPS["infery-drain"]


class _FakeEnvoyAdmin(BaseHTTPRequestHandler):
    """Envoy's admin as drain.py sees it: the drain call, then a shrinking request count."""

    calls: list[str]
    active: list[int]

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        self.calls.append(f"GET {self.path}")
        active = self.active.pop(0) if len(self.active) > 1 else self.active[0]
        body = f"http.admin.downstream_rq_active: 1\nhttp.infery.downstream_rq_active: {active}\n"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_envoy_admin(tmp_path: Path) -> Iterator[tuple[str, type[_FakeEnvoyAdmin]]]:
    handler = type("Handler", (_FakeEnvoyAdmin,), {"calls": [], "active": [2, 1, 0]})
    path = str(tmp_path / "admin.sock")
    server = _UnixHTTPServer(path, handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_drain_script_waits_for_requests_then_for_envoy(
    fake_envoy_admin: tuple[str, type[_FakeEnvoyAdmin]],
) -> None:
    drain = load_drain()
    admin, handler = fake_envoy_admin
    assert drain.drain_envoy(admin, settle_s=0, max_wait_s=10, poll_s=0.01) == "no active requests"
    assert handler.calls[0] == "POST /drain_listeners?graceful"
    assert len(handler.calls) == 4  # the drain, then 2, 1, 0 active requests
    handler.active = [3]
    assert drain.drain_envoy(admin, settle_s=0, max_wait_s=0.2, poll_s=0.01) == "max wait reached"
    assert drain.wait_for_exit(admin, max_wait_s=0.2, poll_s=0.01) == "max wait reached"


def test_drain_script_returns_at_once_without_envoy(tmp_path: Path) -> None:
    drain = load_drain()
    admin = str(tmp_path / "admin.sock")  # nothing listens there
    assert drain.drain_envoy(admin, settle_s=5, max_wait_s=5) == "envoy is not running"
    assert drain.wait_for_exit(admin, max_wait_s=5) == "envoy exited"


def test_envoys_overload_manager_sheds_load_before_its_memory_limit() -> None:
    """The heap the overload actions measure against is under the envoy container's limit."""
    init = container(GATEWAY, "envoy-bootstrap")
    heap = int({e["name"]: e.get("value") for e in init["env"]}["INFERY_ENVOY_MAX_HEAP_BYTES"])
    limit = container(GATEWAY, "envoy")["resources"]["limits"]["memory"]
    units = {"Mi": 1 << 20, "Gi": 1 << 30}
    assert heap < int(limit[:-2]) * units[limit[-2:]]


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_manifests_pass_kubernetes_validate_strict(root: Path, tmp_path: Path) -> None:
    """Every object against the Kubernetes API's own schemas (kubernetes-validate ships them: offline),
    unknown fields rejected."""
    built = subprocess.run(["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(built.stdout)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    checked = subprocess.run(
        [str(validator), "--strict", str(rendered)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]


@pytest.mark.parametrize("root", ROOTS, ids=lambda p: p.name)
def test_no_password_is_written_in_the_manifests(root: Path) -> None:
    objects, _ = kustomize(root)
    for _, c in all_containers(objects):
        for env in c.get("env", []):
            if re.search(r"PASSWORD|TOKEN|SECRET|API_KEY|DATABASE_URL", env["name"]):
                assert "value" not in env, (c["name"], env)


def test_envoy_reaches_the_files_service_with_its_client_certificate(tmp_path: Path) -> None:
    """The bootstrap's files cluster names the files Service and its port; the service serves the
    server half of infery-xds-tls and requires a client certificate (FilesSettings from its env)."""
    files_pod = pod_spec(PRODUCTION, "infery-files")
    files = container(files_pod, "files")
    settings = FilesSettings.from_env(literal_env(files))
    assert settings.files_host == "0.0.0.0" and settings.storage_url.startswith("s3://")
    assert {p["name"]: p["containerPort"] for p in files["ports"]} == {
        "files": settings.files_port,
        "metrics": settings.files_metrics_port,
    }
    server = {settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file}
    assert _secret_files(files_pod, "files") == server
    assert {Path(f).name for f in server} == {"server.pem", "server-key.pem", "ca.pem"}

    argv, _ = init_bootstrap_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERY_")}
    env |= literal_env(container(GATEWAY, "envoy-bootstrap"))
    env["INFERY_ENVOY_BOOTSTRAP"] = str(REPO / "envoy" / "bootstrap.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "infery.cli", *argv[1:]], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    (cluster,) = [
        c for c in yaml.safe_load(run.stdout)["static_resources"]["clusters"] if c["name"] == "infery_files"
    ]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    service = find(PRODUCTION, "Service", address["address"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == address["port_value"]]
    assert (
        port["targetPort"] == "files"
        and service["spec"]["selector"]["app.kubernetes.io/component"] == "files"
    )
    tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    client = {
        tls["tls_certificates"][0]["certificate_chain"]["filename"],
        tls["tls_certificates"][0]["private_key"]["filename"],
        tls["validation_context"]["trusted_ca"]["filename"],
    }
    assert {Path(f).name for f in client} == {"client.pem", "client-key.pem", "ca.pem"}
    assert _secret_files(GATEWAY, "envoy") >= client
    assert "--server-name infery-files" in (K8S / "secret.example.yaml").read_text()
