"""Starts and stops one whole gateway: control plane, ext_proc processes, Envoy.

Used by ``infery up`` and by the end-to-end tests alike, so the tests run the
very processes a user runs. Every process gets its own process group and is
terminated (then killed) on :meth:`Stack.stop`; nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from infery_proto.otel import span_batching
from infery_proto.wire import EXT_PROC_TOKEN_HEADER, FILES_CLUSTER

from ext_proc.shared_state import require_shared_store
from infery.certs import Pki, TlsFiles, generate
from infery.settings import DEFAULT_ENVOY_STATS_PORT, DEFAULT_METRICS_PORT, CliSettings

REPO = Path(__file__).resolve().parent.parent  # the checkout, or site-packages when installed
IN_CHECKOUT = (REPO / "pyproject.toml").is_file()


def bootstrap_template() -> Path:
    """envoy/bootstrap.yaml of the checkout; an installed wheel carries it as infery/envoy/ (setup.py)."""
    checkout = REPO / "envoy" / "bootstrap.yaml"
    return checkout if checkout.is_file() else Path(__file__).resolve().parent / "envoy" / "bootstrap.yaml"


def default_home() -> Path:
    """Where `infery up` keeps its state: .infery in the checkout, or in the working directory."""
    return (REPO if IN_CHECKOUT else Path.cwd()) / ".infery"


BIN = Path(sys.executable).parent


# Where free_port looks, "low-high" (default: below the kernel's ephemeral range). The test
# suite gives each of its parallel workers a slice of its own (tests/conftest.py).
FREE_PORTS_ENV = "INFERY_FREE_PORTS"
_HANDED_OUT: set[int] = set()  # by this process: never the same port to two of its stacks


def free_port() -> int:
    """A port nobody listens on, for a process this one is about to start.

    Not ``bind(port 0)``: the kernel picks that in its ephemeral range, where every outgoing
    connection takes its source port, and a stack binds its ports seconds after they are
    picked -- long enough for a connection of anyone's to take one ("address already in use",
    seen with two stacks starting at once). So the port comes from below that range
    (``INFERY_FREE_PORTS`` narrows it), at random, is checked by binding it, and is never handed
    out twice by one process.
    """
    low, high = _free_port_range()
    for _ in range(200):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high} ({FREE_PORTS_ENV})")


def _free_port_range() -> tuple[int, int]:
    configured = os.environ.get(FREE_PORTS_ENV, "")
    if configured:
        low, _, high = configured.partition("-")
        return int(low), int(high)
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    return 20000, max(ephemeral_low - 1, 21000)


@dataclass(slots=True)
class Ports:
    listen: int = 8080
    admin: int = 8081
    xds: int = 18000
    ext_proc: tuple[int, ...] = (50051,)
    # Prometheus /metrics of each ext_proc process (empty: 9464 + i).
    metrics: tuple[int, ...] = ()
    envoy_stats: int = 0  # Envoy's /stats/prometheus and /ready (0: 9902)
    files: int = 8082  # the files service (INFERY_FILES_PORT), reached by Envoy only
    files_metrics: int = 0  # the files service's Prometheus /metrics (0: off)

    @classmethod
    def free(cls, ext_procs: int = 1) -> Ports:
        return cls(
            free_port(),
            free_port(),
            free_port(),
            tuple(free_port() for _ in range(ext_procs)),
            tuple(free_port() for _ in range(ext_procs)),
            free_port(),
            free_port(),
            free_port(),
        )

    @classmethod
    def of(cls, settings: CliSettings) -> Ports:
        """The ports the settings name (INFERY_LISTEN_PORT, ..., INFERY_METRICS_PORT + i)."""
        ext_procs = range(settings.ext_procs)
        return cls(
            listen=settings.listen_port,
            admin=settings.admin_port,
            xds=settings.xds_port,
            ext_proc=tuple(settings.ext_proc_port + i for i in ext_procs),
            metrics=tuple(settings.metrics_port + i for i in ext_procs),
            envoy_stats=settings.envoy_stats_port,
            files=settings.files_port,
        )

    def metrics_port(self, index: int) -> int:
        return self.metrics[index] if self.metrics else DEFAULT_METRICS_PORT + index

    @property
    def stats_port(self) -> int:
        return self.envoy_stats or DEFAULT_ENVOY_STATS_PORT


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


DIE_WITH_PARENT = Path(__file__).with_name("die_with_parent.py")


def spawn(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Process:
    """``argv`` in its own session, its output in ``log_dir/NAME.log``, SIGTERM'd if the launcher dies.

    No ``preexec_fn``: with one, Python forks a copy of the launcher, gRPC's threads restarted in
    it (infery/die_with_parent.py says why that aborts the child). Without, Python ``vfork``s.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    child_env = {**os.environ, **(env or {})}
    if shutil.which(argv[0], path=child_env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, "no such program", argv[0])  # as Popen would
    with open(log_path, "wb") as log:  # this run's output only: readiness lines are searched in it
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", str(DIE_WITH_PARENT), str(os.getpid()), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=REPO if IN_CHECKOUT else None,
            start_new_session=True,
        )
    return Process(name, popen, log_path)


def wait_until(check: object, what: str, timeout: float, procs: list[Process] = ()) -> None:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited while waiting for {what}:\n{p.log()[-4000:]}")
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in procs)
    raise TimeoutError(f"timed out waiting for {what}\n{logs}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def grpc_serving(target: str) -> bool:
    """Whether the gRPC health service at ``target`` (``unix:PATH`` or ``HOST:PORT``) says SERVING."""
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


EXT_PROC_TOKEN_SECRET = "infery_ext_proc_token"
_T = "type.googleapis.com/"


def render_bootstrap(
    ports: Ports,
    node_id: str,
    *,
    admin_socket: str,
    xds_host: str = "127.0.0.1",
    xds_token: str = "",
    xds_tls: TlsFiles | None = None,
    ext_proc_sockets: Sequence[str] = (),
    ext_proc_token_file: str = "",
    files_host: str = "127.0.0.1",
    settings: CliSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """envoy/bootstrap.yaml with this replica's addresses and credentials filled in.

    Nothing secret is written into the bootstrap itself, so nothing secret is in Envoy's
    config dump: ``xds_tls`` names certificate files (mutual TLS to the control plane;
    preferred over ``xds_token``, which gRPC metadata would show in clear), and
    ``ext_proc_token_file`` an SDS file (:func:`write_ext_proc_token`) whose secret Envoy
    redacts. ``admin_socket``: Envoy's admin, on a Unix socket of mode 600 only.
    ``ext_proc_sockets``: reach ext_proc on these Unix sockets instead of its loopback ports.
    ``files_host``: the files service, on ``ports.files``; with ``xds_tls``, Envoy presents the
    same client certificate to it (the service requires one, signed by the same CA).
    ``settings``: the template, the stats listener and the process-wide limits (default: this
    process's environment). ``environ``: where OpenTelemetry's ``OTEL_BSP_*`` are read, for Envoy's
    span batching (:func:`_set_span_batching`; default: this process's environment).
    """
    settings = CliSettings.from_env() if settings is None else settings
    template = Path(settings.envoy_bootstrap or bootstrap_template())
    doc = yaml.safe_load(template.read_text())
    doc["node"]["id"] = node_id
    doc["admin"]["address"] = {"pipe": {"path": admin_socket, "mode": 0o600}}
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    xds = clusters["infery_xds"]
    xds_endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    xds_endpoint["endpoint"]["address"]["socket_address"] = {"address": xds_host, "port_value": ports.xds}
    if xds_tls is not None:
        xds["transport_socket"] = _client_tls(xds_tls, xds_host)
    if xds_token:
        ads = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]
        ads["initial_metadata"] = [{"key": "authorization", "value": "Bearer " + xds_token}]
    addresses: list[dict[str, object]] = (
        [{"pipe": {"path": path}} for path in ext_proc_sockets]
        if ext_proc_sockets
        else [{"socket_address": {"address": "127.0.0.1", "port_value": p}} for p in ports.ext_proc]
    )
    ext_proc = clusters["infery_ext_proc"]
    ext_proc["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": address}} for address in addresses
    ]
    if ext_proc_token_file:
        options = ext_proc["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        options["http_filters"] = [_inject_ext_proc_token(ext_proc_token_file), _UPSTREAM_CODEC]
    files = clusters[FILES_CLUSTER]
    files_endpoint = files["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    files_endpoint["endpoint"]["address"]["socket_address"] = {
        "address": files_host,
        "port_value": ports.files,
    }
    if xds_tls is not None:
        files["transport_socket"] = _client_tls(xds_tls, files_host, alpn="http/1.1")
    _set_stats_listener(doc, admin_socket, ports.envoy_stats, settings.envoy_stats_host or "")
    _set_overload_limits(doc, settings)
    _set_span_batching(doc, os.environ if environ is None else environ)
    return doc


def _set_span_batching(doc: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Envoy's tracer batches its spans as the SDKs of ext_proc and the control plane do, by the
    same ``OTEL_BSP_*`` variables (infery_proto/otel.py ``span_batching``): in the bootstrap's
    runtime, the only place Envoy reads them from."""
    spans, delay_ms = span_batching(environ)
    layers = doc.setdefault("layered_runtime", {}).setdefault("layers", [])
    static = next((layer for layer in layers if "static_layer" in layer), None)
    if static is None:
        static = {"name": "static", "static_layer": {}}
        layers.insert(0, static)
    static["static_layer"]["tracing.opentelemetry.min_flush_spans"] = spans
    static["static_layer"]["tracing.opentelemetry.flush_interval_ms"] = delay_ms


def _set_stats_listener(doc: dict[str, Any], admin_socket: str, port: int, host: str) -> None:
    """The stats-only listener: to this replica's admin socket, on ``host:port`` (falsy: the template's)."""
    resources = doc["static_resources"]
    for cluster in resources["clusters"]:
        if cluster["name"] == "infery_envoy_admin":
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"] = {"pipe": {"path": admin_socket}}
    for listener in resources.get("listeners", []):
        if listener["name"] == "infery_stats":
            address = listener["address"]["socket_address"]
            address["port_value"] = port or address["port_value"]
            address["address"] = host or address["address"]


def write_ext_proc_token(path: Path, token: str) -> None:
    """The SDS file Envoy reads ext_proc's token from (owner-only; Envoy's config dump redacts it)."""
    resource = {
        "resources": [
            {
                "@type": _T + "envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": EXT_PROC_TOKEN_SECRET,
                "generic_secret": {"secret": {"inline_string": token}},
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(resource, out)


def _client_tls(files: TlsFiles, server_name: str, alpn: str = "h2") -> dict[str, object]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": {
                "alpn_protocols": [alpn],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(files.cert)},
                        "private_key": {"filename": str(files.key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(files.ca)}},
            },
        },
    }


def _inject_ext_proc_token(sds_file: str) -> dict[str, object]:
    """An upstream filter on the ext_proc cluster: every gRPC stream to ext_proc carries the token."""
    return {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": _T + "envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "credential": {
                        "name": EXT_PROC_TOKEN_SECRET,
                        "sds_config": {"path_config_source": {"path": sds_file}},
                    },
                    "header": EXT_PROC_TOKEN_HEADER,
                },
            },
        },
    }


_UPSTREAM_CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {"@type": _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}


def _set_overload_limits(doc: dict[str, object], settings: CliSettings) -> None:
    """The bootstrap's overload manager with this replica's connection and heap limits.

    ``INFERY_MAX_CONNECTIONS``: downstream connections Envoy keeps open (more are
    closed on accept); ``INFERY_ENVOY_MAX_HEAP_BYTES``: the heap the overload
    actions measure against (keep it under the container's memory limit).
    """
    overload = doc.get("overload_manager")
    if not isinstance(overload, dict):
        return
    limits = {
        "envoy.resource_monitors.global_downstream_max_connections": (
            "max_active_downstream_connections",
            settings.max_connections,
        ),
        "envoy.resource_monitors.fixed_heap": ("max_heap_size_bytes", settings.envoy_max_heap_bytes),
    }
    for monitor in overload["resource_monitors"]:
        field_name, value = limits.get(monitor["name"], ("", None))
        if value:
            monitor["typed_config"][field_name] = value


@dataclass
class Stack:
    """One gateway: ``with Stack(run_dir, ports, env) as stack: ...``."""

    run_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)
    envoy_concurrency: int = 2
    # Batch workers (python -m control_plane.batches), started once the listener is up.
    batch_workers: int = 1
    # Envoy reaches ext_proc on Unix sockets: ~15% more requests/s than loopback TCP
    # (bench/README.md), and ext_proc then has no TCP port at all. Without them, ext_proc's
    # ports need the token in INFERY_EXT_PROC_TOKEN (made up here when not given).
    ext_proc_uds: bool = True
    # A command ext_proc runs under (a profiler: bench/insitu_instructions.py runs it under
    # callgrind), and how many times longer its start may then take.
    ext_proc_wrapper: tuple[str, ...] = ()
    ext_proc_start_s: float = 60.0
    processes: dict[str, Process] = field(default_factory=dict)
    pki: Pki = field(init=False, repr=False)
    _socket_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.ext_proc_uds:
            self.env.setdefault("INFERY_EXT_PROC_TOKEN", secrets.token_urlsafe(24))
        # The control plane's gRPC port serves provider keys: mutual TLS with a throwaway CA.
        self.pki = generate(self.run_dir / "pki")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.listen}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    def control_plane_env(self) -> dict[str, str]:
        return {
            "INFERY_DATABASE_URL": f"sqlite:///{self.run_dir / 'infery.db'}",
            "INFERY_ADMIN_PORT": str(self.ports.admin),
            "INFERY_XDS_PORT": str(self.ports.xds),
            "INFERY_LISTEN_PORT": str(self.ports.listen),
            "INFERY_LISTEN_HOST": "127.0.0.1",
            **self.pki.server.env(),
            **self.env,
        }

    @property
    def envoy_admin_socket(self) -> str:
        """Envoy's admin (config dump, stats, /quitquitquit): a Unix socket of mode 600, never TCP."""
        return str(self._private_dir() / "envoy-admin.sock")

    def envoy_admin(self, path: str, **params: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=self.envoy_admin_socket), timeout=10) as client:
            return client.get(f"http://envoy{path}", params=params)

    def _private_dir(self) -> Path:
        if self._socket_dir is None:
            # Short and private (mode 700): a socket path must fit in 108 bytes, pytest's tmp dirs may not.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="infery-"))
        return self._socket_dir

    def ext_proc_socket(self, port: int) -> str:
        return str(self._private_dir() / f"ext_proc-{port}.sock")

    def settings(self) -> CliSettings:
        """What this stack's processes are told: the environment, then ``env`` over it."""
        return CliSettings.from_env({**os.environ, **self.env})

    def start(self) -> Stack:
        require_shared_store(len(self.ports.ext_proc), self.settings().redis_url)
        # Each ext_proc checks again: it is one of this many.
        self.env.setdefault("INFERY_EXT_PROCS", str(len(self.ports.ext_proc)))
        try:
            self.start_control_plane()
            self.start_files()
            for port in self.ports.ext_proc:
                self.start_ext_proc(port)
            self.start_envoy()
            for index in range(self.batch_workers):
                self.start_batch_worker(f"batch_worker_{index}")
        except BaseException:
            self.stop()
            raise
        return self

    def start_control_plane(self) -> None:
        proc = spawn(
            "control_plane",
            [str(BIN / "python"), "-m", "control_plane"],
            self.run_dir / "logs",
            self.control_plane_env(),
        )
        self.processes["control_plane"] = proc
        url = f"{self.admin_url}/readyz"  # the store answers and is migrated
        wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, "the control plane", 60, [proc])
        wait_until(lambda: port_open(self.ports.xds), "the xDS port", 30, [proc])

    def files_env(self) -> dict[str, str]:
        """The control plane's store and certificates, the files port, and storage under the run
        directory unless this stack's ``env`` names an ``INFERY_FILES_URL``."""
        env = {"INFERY_FILES_URL": (self.run_dir / "files").resolve().as_uri(), **self.control_plane_env()}
        env["INFERY_FILES_PORT"] = str(self.ports.files)
        if self.ports.files_metrics:
            env["INFERY_FILES_METRICS_PORT"] = str(self.ports.files_metrics)
        return env

    @property
    def files_url(self) -> str:
        """The files service itself (mutual TLS: :meth:`files_client` has Envoy's credentials)."""
        return f"https://127.0.0.1:{self.ports.files}"

    def files_client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client presenting the data plane's client certificate, as Envoy does."""
        client = self.pki.client
        context = ssl.create_default_context(cafile=str(client.ca))
        context.load_cert_chain(str(client.cert), str(client.key))
        return httpx.Client(verify=context, **kwargs)

    def start_files(self) -> None:
        proc = spawn(
            "files",
            [str(BIN / "python"), "-m", "control_plane.files"],
            self.run_dir / "logs",
            self.files_env(),
        )
        self.processes["files"] = proc

        def healthy() -> bool:
            with self.files_client(timeout=1) as client:
                return client.get(f"{self.files_url}/healthz").status_code == 200

        wait_until(healthy, "the files service", 60, [proc])

    def batch_worker_env(self) -> dict[str, str]:
        """The store and the files storage the files service uses, and this stack's listener."""
        files = self.files_env()
        return {
            "INFERY_DATABASE_URL": files["INFERY_DATABASE_URL"],
            "INFERY_FILES_URL": files["INFERY_FILES_URL"],
            "INFERY_LISTENER_URL": f"http://127.0.0.1:{self.ports.listen}",
            **self.env,
        }

    def start_batch_worker(
        self, name: str = "batch_worker_0", env: Mapping[str, str] | None = None
    ) -> Process:
        """A batch worker (``python -m control_plane.batches``); ``env`` over :meth:`batch_worker_env`."""
        proc = spawn(
            name,
            [str(BIN / "python"), "-m", "control_plane.batches"],
            self.run_dir / "logs",
            {**self.batch_worker_env(), **(env or {})},
        )
        self.processes[name] = proc
        wait_until(lambda: "ready batch worker" in proc.log(), f"the batch worker {name}", 60, [proc])
        return proc

    def _listener_env(self) -> dict[str, str]:
        if {**os.environ, **self.env}.get("INFERY_TLS_CERT_FILE"):
            return {}
        return {"INFERY_LISTENER_URL": f"http://127.0.0.1:{self.ports.listen}"}

    def start_ext_proc(self, port: int) -> None:
        name = f"ext_proc_{port}"
        proc = spawn(
            name,
            [
                *self.ext_proc_wrapper,
                str(BIN / "python"),
                "-m",
                "ext_proc",
                "--port",
                str(port),
                "--control-plane",
                f"127.0.0.1:{self.ports.xds}",
                "--spool",
                str(self.run_dir / f"usage-{port}.db"),
                *(["--uds", self.ext_proc_socket(port)] if self.ext_proc_uds else []),
                "--metrics-port",
                str(self.ports.metrics_port(self.ports.ext_proc.index(port))),
                "--metrics-host",
                "127.0.0.1",
            ],
            self.run_dir / "logs",
            # INFERY_EXT_PROC_SERVER (h2 or grpcio) reaches ext_proc from here or from os.environ;
            # the files service is where chat's file_id parts are read, with the client certificate.
            # Its own listener is where an emulated n > 1 asks for its other choices (plain HTTP
            # on loopback; an HTTPS listener needs INFERY_LISTENER_URL with a name its certificate has).
            {
                **self.pki.client.env(),
                "INFERY_FILES_SERVICE": self.files_url,
                **self._listener_env(),
                **self.env,
            },
        )
        self.processes[name] = proc
        target = f"unix:{self.ext_proc_socket(port)}" if self.ext_proc_uds else f"127.0.0.1:{port}"
        serving = f"ext_proc on {port} to serve"
        wait_until(lambda: grpc_serving(target), serving, self.ext_proc_start_s, [proc])
        envoy = self.processes.get("envoy")
        if envoy is not None and envoy.alive():
            # A restarted ext_proc: Envoy sends it traffic once its next health check passes.
            address = self.ext_proc_socket(port) if self.ext_proc_uds else f"127.0.0.1:{port}"
            wait_until(
                lambda: self._envoy_sees_healthy(address), f"Envoy to see ext_proc on {port}", 30, [proc]
            )

    def _envoy_sees_healthy(self, address: str) -> bool:
        """Whether Envoy's ``infery_ext_proc`` cluster has the endpoint at ``address`` healthy."""
        flags = [
            line.rpartition("::")[2]
            for line in self.envoy_admin("/clusters").text.splitlines()
            if line.startswith("infery_ext_proc::") and address in line and "::health_flags::" in line
        ]
        return flags == ["healthy"]

    def start_envoy(self) -> None:
        environ = {**os.environ, **self.env}  # this replica's environment, as its processes get it
        settings = CliSettings.from_env({"INFERY_ENVOY_STATS_HOST": "127.0.0.1", **environ})
        bootstrap = self.run_dir / "envoy.yaml"
        token_file = ""
        if not self.ext_proc_uds:
            token_file = str(self.run_dir / "ext_proc_token.yaml")
            write_ext_proc_token(Path(token_file), self.env["INFERY_EXT_PROC_TOKEN"])
        bootstrap.write_text(
            yaml.safe_dump(
                render_bootstrap(
                    self.ports,
                    f"infery-envoy-{self.ports.listen}",
                    admin_socket=self.envoy_admin_socket,
                    xds_token=settings.xds_token or "",
                    xds_tls=self.pki.client,
                    ext_proc_sockets=[self.ext_proc_socket(p) for p in self.ports.ext_proc]
                    if self.ext_proc_uds
                    else (),
                    ext_proc_token_file=token_file,
                    settings=settings,
                    environ=environ,
                )
            )
        )
        proc = spawn(
            "envoy",
            [
                str(BIN / "envoy"),
                "-c",
                str(bootstrap),
                "--disable-hot-restart",
                "--concurrency",
                str(self.envoy_concurrency),
                "--log-level",
                "warning",
                # The access log (stdout) reaches its file within a second, not Envoy's default 10 s.
                "--file-flush-interval-msec",
                "1000",
            ],
            self.run_dir / "logs",
        )
        self.processes["envoy"] = proc
        ready = f"http://127.0.0.1:{self.ports.stats_port}/ready"  # the stats-only listener
        wait_until(lambda: httpx.get(ready, timeout=1).status_code == 200, "Envoy to be ready", 60, [proc])
        wait_until(lambda: port_open(self.ports.listen), "Envoy's listener", 60, [proc])

    @property
    def envoy_stats_url(self) -> str:
        """Envoy's stats-only listener: ``/stats/prometheus`` and ``/ready``, nothing else of its admin."""
        return f"http://127.0.0.1:{self.ports.stats_port}"

    def metrics_url(self, port: int) -> str:
        """Prometheus ``/metrics`` of the ext_proc process on ``port``."""
        return f"http://127.0.0.1:{self.ports.metrics_port(self.ports.ext_proc.index(port))}/metrics"

    def stop_process(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc:
            proc.stop()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log()[-5000:]}" for name, p in self.processes.items())

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(run_dir: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(run_dir, **kwargs)  # type: ignore[arg-type]
    with stack:
        yield stack
