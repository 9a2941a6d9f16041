"""The whole side-by-side run: start each system in turn, load it the same way, write the table.

Systems run one at a time (simulators stay up throughout) so that no idle peer competes for the
two cores while another is measured. Every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import platform
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from infery_proto import identity_assertion

from bench import (
    body_rows,
    gateway,
    litellm_peer,
    passthrough,
    portkey_peer,
    report,
    streams,
    tensorzero_peer,
    uploads,
    wrk,
)
from bench.launch import Simulator, bounded_spawn, start_otlp_receiver, start_simulator
from bench.procstat import raise_fd_limit, rss_mb
from bench.scenarios import Result, Target, run_chat, run_loop, run_stream, run_upload
from bench.settings import TOGGLES, Settings
from bench.wrk import Request
from control_plane.store.db import open_store
from control_plane.xds.data_plane_secret import files_identity_key
from infery.stack import BIN, REPO, Stack, free_port, port_open, wait_until

SIM_KEY = "sk-bench-" + secrets.token_hex(8)
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
PACED_MODEL = "gpt-4o-mini-paced"
OPENAI_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
# The systems measured on the gateway (one gateway serves them all).
GATEWAY_SYSTEMS = ("gateway", "gateway_anthropic", "gateway_responses", "gateway_responses_anthropic")


def prompt(words: int) -> str:
    """The simulator echoes the user's words and streams at most 12 characters per chunk, so each of
    these 23-character words comes back as two SSE chunks."""
    return " ".join(f"gateway-bench-word-{i % 10000:04d}" for i in range(words))


def openai_request(port: int, path: str, key: str, model: str, text: str, stream: bool) -> Request:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    return Request("127.0.0.1", port, path, headers, orjson.dumps(body))


def anthropic_request(port: int, key: str, text: str, stream: bool) -> Request:
    body: dict[str, Any] = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    }
    if stream:
        body["stream"] = True
    headers = {"content-type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"}
    return Request("127.0.0.1", port, "/v1/messages", headers, orjson.dumps(body))


def responses_request(port: int, key: str, model: str, text: str, stream: bool) -> Request:
    """The same prompt as a Responses API request (``input`` a string), stored as OpenAI's default
    ``store: true`` would keep it: the gateway keeps each answer, which is part of the cost."""
    body: dict[str, Any] = {"model": model, "input": text}
    if stream:
        body["stream"] = True
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    return Request("127.0.0.1", port, RESPONSES_PATH, headers, orjson.dumps(body))


def responses_target(
    system: str, port: int, key: str, model: str, text: str, roles: dict[str, list[int]]
) -> Target:
    return Target(
        system,
        responses_request(port, key, model, text, False),
        responses_request(port, key, model, text, True),
        b"response.completed",  # a Responses stream has no [DONE]: its last event
        roles,
    )


def openai_target(
    system: str, port: int, path: str, key: str, model: str, text: str, roles: dict[str, list[int]]
) -> Target:
    return Target(
        system,
        openai_request(port, path, key, model, text, False),
        openai_request(port, path, key, model, text, True),
        b"[DONE]",
        roles,
    )


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.results: list[Result] = []
        self.hold: streams.HoldStats | None = None
        self.notes: list[str] = []
        self.logs = settings.work_dir / "logs"
        self.text = prompt(settings.prompt_words)
        self.wrk_bin = "wrk"
        self.litellm_version = "not run"
        self.peer_versions: dict[str, str] = {}
        self.load_before = os.getloadavg()[0]

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ measuring
    def measure(self, target: Target, loaded_chat_only: bool = False, stream: bool = True) -> None:
        """Each row of ``target``: chat and stream, loaded and at c1 (or the loaded chat row only;
        ``stream=False``: no stream rows, for a peer whose streaming fails)."""
        s = self.s
        plan: list[tuple[str, int, Callable[[], Result]]] = []
        for conc in dict.fromkeys((s.concurrency,) if loaded_chat_only else (s.concurrency, 1)):
            plan.append(
                (
                    "chat",
                    conc,
                    lambda c=conc: run_chat(  # type: ignore[misc]
                        target, c, s.duration_s, s.warmup_s, s.work_dir, self.wrk_bin
                    ),
                )
            )
        for conc in dict.fromkeys(() if loaded_chat_only or not stream else (s.concurrency, 1)):
            plan.append(
                (
                    "stream",
                    conc,
                    lambda c=conc: run_stream(  # type: ignore[misc]
                        target, c, s.duration_s, s.warmup_s, s.stream_timeout_s
                    ),
                )
            )
        for mode, conc, run in plan:
            self.log(f"  {target.system:<18} {mode:<6} c{conc:<4} ...")
            try:
                result = run()
            except Exception as exc:  # one broken row must not lose the rest of the table
                self.notes.append(f"{target.system} {mode} c{conc} failed: {exc}")
                self.log(f"    failed: {exc}")
                continue
            self.results.append(result)
            lifetime = "peak RSS is since process start: /proc/<pid>/clear_refs could not be written"
            if result.peak_is_lifetime and lifetime not in self.notes:
                self.notes.append(lifetime)
            self.log(
                f"    {result.rps:,.0f} req/s, p50 {result.p50_ms or 0:.2f} ms, "
                f"p99 {result.p99_ms or 0:.2f} ms, "
                f"errors {result.errors}"
                + (f", {result.chunks_per_s:,.0f} chunks/s" if result.chunks_per_s is not None else "")
            )

    def measure_sizes(self, target: Target, model: str, key: str) -> None:
        """The rows by prompt size (bench/body_rows.py) for a system that speaks OpenAI's chat."""
        s = self.s
        if not s.body_sizes:
            return
        chat = target.chat

        def request(text: str) -> Request:
            return openai_request(chat.port, chat.path, key, model, text, False)

        def run(sized: Target) -> Result:
            size = len(sized.chat.body)
            self.log(f"  {sized.system:<18} chat {body_rows.label(size)} c{body_rows.CONCURRENCY} ...")
            return run_chat(sized, body_rows.CONCURRENCY, s.duration_s, s.warmup_s, s.work_dir, self.wrk_bin)

        try:
            self.results += body_rows.measure(target.system, request, target.roles, s.body_sizes, run)
        except Exception as exc:
            self.notes.append(f"{target.system} rows by prompt size failed: {exc}")
            self.log(f"    failed: {exc}")

    def wanted(self, system: str) -> bool:
        return system in self.s.systems

    # ------------------------------------------------------------------ systems
    def run(self) -> None:
        s = self.s
        raise_fd_limit()
        self.wrk_bin = wrk.ensure_wrk()
        if self.wanted("litellm"):
            try:
                self.log("LiteLLM: checking bench/.venv-litellm (first run installs it) ...")
                litellm_peer.ensure_installed(self.logs / "litellm-install.log")
                self.litellm_version = litellm_peer.version()
            except Exception as exc:
                self.notes.append(f"LiteLLM could not be installed, its rows are missing: {exc}")
        for system, peer in (("portkey", portkey_peer), ("tensorzero", tensorzero_peer)):
            if self.wanted(system):
                try:
                    self.log(f"{system}: checking its install under bench/ (first run installs it) ...")
                    peer.ensure_installed(self.logs / f"{system}-install.log")
                    self.peer_versions[system] = peer.version()
                except Exception as exc:
                    self.notes.append(f"{system} could not be installed, its rows are missing: {exc}")
        with contextlib.ExitStack() as cleanup:
            sim = self.simulator(cleanup, "sim_openai", "openai", s.stream_chunk_delay_ms)
            sim_anthropic = self.simulator(cleanup, "sim_anthropic", "anthropic", s.stream_chunk_delay_ms)
            provider = {"provider": [sim.process.popen.pid]}
            if self.wanted("provider"):
                self.log("provider directly")
                self.measure(
                    openai_target(
                        "provider", sim.port, OPENAI_PATH, SIM_KEY, OPENAI_MODEL, self.text, provider
                    )
                )
            if self.wanted("provider_anthropic"):
                self.log("Anthropic provider directly")
                self.measure(
                    Target(
                        "provider_anthropic",
                        anthropic_request(sim_anthropic.port, SIM_KEY, self.text, False),
                        anthropic_request(sim_anthropic.port, SIM_KEY, self.text, True),
                        b"message_stop",
                        {"provider": [sim_anthropic.process.popen.pid]},
                    )
                )
            if self.wanted("envoy"):
                self.log("Envoy pass-through")
                proc, port = passthrough.start(s.work_dir, sim.port, s.envoy_concurrency)
                try:
                    target = openai_target(
                        "envoy",
                        port,
                        OPENAI_PATH,
                        SIM_KEY,
                        OPENAI_MODEL,
                        self.text,
                        {"envoy": [proc.popen.pid], **provider},
                    )
                    self.measure(target)
                    self.measure_sizes(target, OPENAI_MODEL, SIM_KEY)
                finally:
                    proc.stop()
            if any(self.wanted(system) for system in GATEWAY_SYSTEMS):
                self.run_gateway(cleanup, sim, sim_anthropic)
            for system, env in TOGGLES.items():
                if self.wanted(system):
                    self.run_toggle(system, env, sim)
            if self.wanted("files_envoy") or self.wanted("files_gateway"):
                self.run_uploads()
            if self.wanted("litellm") and self.litellm_version != "not run":
                self.log("LiteLLM proxy")
                proc, port, master_key = litellm_peer.start(s.work_dir, [OPENAI_MODEL], sim.base_url, SIM_KEY)
                try:
                    self.measure(
                        openai_target(
                            "litellm",
                            port,
                            OPENAI_PATH,
                            master_key,
                            OPENAI_MODEL,
                            self.text,
                            {"litellm": [proc.popen.pid], **provider},
                        )
                    )
                finally:
                    proc.stop()
            if "portkey" in self.peer_versions:
                self.run_portkey(sim, provider)
            if "tensorzero" in self.peer_versions:
                self.run_tensorzero(sim, provider)

    def run_portkey(self, sim: Simulator, provider: dict[str, list[int]]) -> None:
        self.log("Portkey gateway")
        self.notes.append(portkey_peer.STREAMING_NOTE.format(node=portkey_peer.node_version()))
        proc, port = portkey_peer.start(self.s.work_dir)
        try:
            target = openai_target(
                "portkey",
                port,
                OPENAI_PATH,
                SIM_KEY,
                OPENAI_MODEL,
                self.text,
                {"portkey": [proc.popen.pid], **provider},
            )
            for request in (target.chat, target.stream):
                request.headers.update(portkey_peer.headers(sim.base_url))
            self.measure(target, stream=False)
        finally:
            proc.stop()

    def run_tensorzero(self, sim: Simulator, provider: dict[str, list[int]]) -> None:
        self.log("TensorZero gateway")
        proc, port = tensorzero_peer.start(self.s.work_dir, OPENAI_MODEL, sim.base_url, SIM_KEY)
        try:
            self.measure(
                openai_target(
                    "tensorzero",
                    port,
                    tensorzero_peer.PATH,
                    "unused",  # the gateway holds the provider's key; it checks no client key
                    tensorzero_peer.model_name(OPENAI_MODEL),
                    self.text,
                    {"tensorzero": [proc.popen.pid], **provider},
                )
            )
        finally:
            proc.stop()

    def simulator(self, cleanup: contextlib.ExitStack, name: str, kind: str, delay_ms: float) -> Simulator:
        sim = start_simulator(name, kind, SIM_KEY, delay_ms, self.logs)
        cleanup.callback(sim.process.stop)
        return sim

    def run_gateway(self, cleanup: contextlib.ExitStack, sim: Simulator, sim_anthropic: Simulator) -> None:
        s = self.s
        self.log("gateway (control plane + ext_proc + Envoy)")
        paced = (
            self.simulator(cleanup, "sim_openai_paced", "openai", s.hold_chunk_delay_ms) if s.hold else None
        )
        upstreams = [
            gateway.Upstream("sim-openai", "openai", sim.base_url, SIM_KEY, ((OPENAI_MODEL, OPENAI_MODEL),)),
            gateway.Upstream(
                "sim-anthropic",
                "anthropic",
                sim_anthropic.base_url,
                SIM_KEY,
                ((ANTHROPIC_MODEL, ANTHROPIC_MODEL),),
            ),
        ]
        if paced is not None:
            upstreams.append(
                gateway.Upstream(
                    "sim-openai-paced", "openai", paced.base_url, SIM_KEY, ((PACED_MODEL, OPENAI_MODEL),)
                )
            )
        run_dir = s.work_dir / "gateway"
        if run_dir.exists():
            for stale in run_dir.glob("*.db*"):  # a fresh store and usage spool each run
                stale.unlink()
        stack, token = gateway.start(run_dir, s.ext_procs, s.envoy_concurrency)
        cleanup.callback(stack.stop)
        try:
            probe = {"messages": [{"role": "user", "content": "hello"}]}
            key = gateway.configure(stack, token, upstreams, probe)
            roles = self.gateway_roles(stack)
            port = stack.ports.listen
            if self.wanted("gateway"):
                target = openai_target(
                    "gateway",
                    port,
                    OPENAI_PATH,
                    key,
                    OPENAI_MODEL,
                    self.text,
                    {**roles, "provider": [sim.process.popen.pid]},
                )
                self.measure(target)
                self.measure_sizes(target, OPENAI_MODEL, key)
            if self.wanted("gateway_anthropic"):
                self.measure(
                    openai_target(
                        "gateway_anthropic",
                        port,
                        OPENAI_PATH,
                        key,
                        ANTHROPIC_MODEL,
                        self.text,
                        {**roles, "provider": [sim_anthropic.process.popen.pid]},
                    )
                )
            for system, model, provider_sim in (
                ("gateway_responses", OPENAI_MODEL, sim),
                ("gateway_responses_anthropic", ANTHROPIC_MODEL, sim_anthropic),
            ):
                if self.wanted(system):
                    target_roles = {**roles, "provider": [provider_sim.process.popen.pid]}
                    self.measure(responses_target(system, port, key, model, self.text, target_roles))
            if paced is not None:
                self.hold_streams(stack, port, key, roles)
        finally:
            stack.stop()
            if paced is not None:
                paced.process.stop()

    def run_uploads(self) -> None:
        """A file of ``upload_mb`` uploaded to ``/v1/files`` through the gateway (Envoy, ext_proc on
        the headers only, the files service over mutual TLS, the control plane) and through Envoy
        alone to a second files service on the same store (plain HTTP on loopback, the identity
        signed here per upload as ext_proc signs it): what the gateway adds to an upload."""
        s = self.s
        self.log(f"uploads of {s.upload_mb:g} MB (files service)")
        run_dir = s.work_dir / "files-gateway"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh store, and no stored bytes of an earlier run
        stack, token = gateway.start(run_dir, s.ext_procs, s.envoy_concurrency)
        try:
            key = gateway.configure(stack, token, [], {})
            content_type, body = uploads.form(int(s.upload_mb * 1e6))
            file_bytes = int(s.upload_mb * 1e6)

            def measure(
                system: str, port: int, headers: Callable[[], dict[str, str]], roles: dict[str, list[int]]
            ) -> None:
                upload = uploads.Upload(
                    "127.0.0.1", port, "/v1/files", file_bytes, content_type, body, headers
                )
                self.log(f"  {system:<18} upload c{s.upload_concurrency:<4} ...")
                try:
                    result = run_upload(
                        system,
                        upload,
                        roles,
                        s.upload_concurrency,
                        s.duration_s,
                        s.warmup_s,
                        s.stream_timeout_s,
                    )
                except Exception as exc:
                    self.notes.append(f"{system} upload failed: {exc}")
                    self.log(f"    failed: {exc}")
                    return
                self.results.append(result)
                self.log(
                    f"    {result.rps:,.1f} uploads/s, p50 {result.p50_ms or 0:.0f} ms, "
                    f"errors {result.errors}"
                )

            roles = self.gateway_roles(stack)
            files_pid = [stack.processes["files"].popen.pid]
            if self.wanted("files_gateway"):
                auth = {"authorization": f"Bearer {key}"}
                measure("files_gateway", stack.ports.listen, lambda: auth, {**roles, "files": files_pid})
                _empty(run_dir / "files")
            if self.wanted("files_envoy"):
                self.envoy_uploads(stack, run_dir, measure)
        finally:
            stack.stop()

    def envoy_uploads(self, stack: Stack, run_dir: Path, measure: Callable[..., None]) -> None:
        s = self.s
        # The gateway's store and key; no TLS, no metrics port (the gateway's service has it).
        env = {k: v for k, v in stack.files_env().items() if "_TLS_" not in k and "METRICS" not in k}
        port = free_port()
        env |= {
            "INFERY_FILES_PORT": str(port),
            "INFERY_FILES_URL": (run_dir / "files-envoy").resolve().as_uri(),
        }
        files = bounded_spawn(
            "files_plain", [str(BIN / "python"), "-m", "control_plane.files"], self.logs, env
        )
        try:
            wait_until(lambda: port_open(port), "the plain files service", 60, [files])
            _engine, sessions = open_store(env["INFERY_DATABASE_URL"])
            with sessions() as session:
                identity_key = files_identity_key(session)
            ids = itertools.count()

            def signed() -> dict[str, str]:  # what ext_proc's files endpoint asserts
                who = identity_assertion.Identity(f"bench-{next(ids)}", "bench", "bench", "bench")
                return {
                    identity_assertion.HEADER: identity_assertion.sign(identity_key, who, "POST", "/v1/files")
                }

            proxy, proxy_port = passthrough.start(s.work_dir, port, s.envoy_concurrency)
            try:
                measure(
                    "files_envoy",
                    proxy_port,
                    signed,
                    {"envoy": [proxy.popen.pid], "files": [files.popen.pid]},
                )
            finally:
                proxy.stop()
        finally:
            files.stop()
            _empty(run_dir / "files-envoy")

    def run_toggle(self, system: str, env: dict[str, str], sim: Simulator) -> None:
        """The gateway with one switch changed (TOGGLES), its loaded chat row: compared with the
        ``gateway`` row, what that switch costs. Tracing exports to a real OTLP receiver."""
        s = self.s
        self.log(f"gateway, {system}")
        with contextlib.ExitStack() as cleanup:
            extra_roles: dict[str, list[int]] = {}  # the traced row's OTLP receiver
            if system == "gateway_traced":
                otlp = start_otlp_receiver(s.work_dir)
                cleanup.callback(lambda: self.log(f"    OTLP receiver got {otlp.stop():,} spans"))
                env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint}
                extra_roles["otlp_receiver"] = [otlp.process.popen.pid]
            run_dir = s.work_dir / system
            if run_dir.exists():
                for stale in run_dir.glob("*.db*"):
                    stale.unlink()
            stack, token = gateway.start(run_dir, s.ext_procs, s.envoy_concurrency, env)
            cleanup.callback(stack.stop)
            upstream = gateway.Upstream(
                "sim-openai", "openai", sim.base_url, SIM_KEY, ((OPENAI_MODEL, OPENAI_MODEL),)
            )
            key = gateway.configure(
                stack, token, [upstream], {"messages": [{"role": "user", "content": "hello"}]}
            )
            roles = {**self.gateway_roles(stack), "provider": [sim.process.popen.pid], **extra_roles}
            self.measure(
                openai_target(system, stack.ports.listen, OPENAI_PATH, key, OPENAI_MODEL, self.text, roles),
                loaded_chat_only=True,
            )

    @staticmethod
    def gateway_roles(stack: Stack) -> dict[str, list[int]]:
        procs = stack.processes
        return {
            "ext_proc": [p.popen.pid for name, p in procs.items() if name.startswith("ext_proc")],
            "envoy": [procs["envoy"].popen.pid],
            "control_plane": [procs["control_plane"].popen.pid],
        }

    def hold_streams(self, stack: Stack, port: int, key: str, roles: dict[str, list[int]]) -> None:
        s = self.s
        self.log(f"  holding {s.hold_streams} streams open ...")
        request = openai_request(port, OPENAI_PATH, key, PACED_MODEL, prompt(s.hold_words), True)
        expected_s = (s.hold_words + 6) * s.hold_chunk_delay_ms / 1000
        try:
            self.hold = run_loop(
                streams.hold(
                    request,
                    streams=s.hold_streams,
                    ramp_s=s.hold_ramp_s,
                    done_marker=b"[DONE]",
                    timeout_s=expected_s + s.hold_ramp_s + 60,
                    rss_mb=lambda: {role: rss_mb(roles[role]) for role in ("ext_proc", "envoy")},
                )
            )
        except Exception as exc:
            self.notes.append(f"holding {s.hold_streams} streams failed: {exc}")
            return
        h = self.hold
        self.log(
            f"    max open {h.max_open}, completed {h.stats.ok}, errors {dict(h.stats.errors)}, "
            f"{'n/a' if h.mb_per_stream is None else f'{h.mb_per_stream * 1024:.1f} KB'} per stream"
        )

    # ------------------------------------------------------------------ output
    def meta(self, started: dt.datetime) -> dict[str, Any]:
        s = self.s
        chunk_counts = [
            r.chunks / r.ok
            for r in self.results
            if r.mode == "stream" and r.chunks and r.ok and r.system == "provider"
        ]
        return {
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "git_commit": _git_commit(),
            "envoy_version": _envoy_version(),
            "litellm_version": self.litellm_version,
            "peer_versions": self.peer_versions,
            "quick": s.quick,
            "duration_s": s.duration_s,
            "warmup_s": s.warmup_s,
            "concurrency": s.concurrency,
            "prompt_words": s.prompt_words,
            "stream_chunk_delay_ms": s.stream_chunk_delay_ms,
            "stream_chunks": round(chunk_counts[0]) if chunk_counts else "n/a",
            "hold_streams": s.hold_streams if s.hold else 0,
            "hold_ramp_s": s.hold_ramp_s,
            "hold_chunk_delay_ms": s.hold_chunk_delay_ms,
            "ext_procs": s.ext_procs,
            "envoy_concurrency": s.envoy_concurrency,
            "body_sizes": list(s.body_sizes),
            "loadgen": "wrk -t1 (chat), bench asyncio client (stream)",
            # Other work on the machine skews every row; a high load average says the run was shared.
            "loadavg_1m_before": round(self.load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "notes": self.notes,
        }

    def write(self, started: dt.datetime, out: Path) -> str:
        meta = self.meta(started)
        checks = report.checks(self.results, self.hold, self.s.concurrency)
        table = report.markdown(self.results, checks, self.hold, meta, self.s.body_sizes)
        doc = {
            "meta": meta,
            "scenarios": [r.to_json() for r in report.sorted_results(self.results)],
            "hold": report.hold_json(self.hold),
            "targets": [c.to_json() for c in checks],
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        (out / "latest.md").write_text(table)
        return table


def _empty(directory: Path) -> None:
    """Frees the stored uploads' disk space between rows (outside any measured window)."""
    shutil.rmtree(directory, ignore_errors=True)


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip() or "unknown"
    return "unknown"


def _envoy_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([str(BIN / "envoy"), "--version"], capture_output=True, text=True, timeout=30)
        for token in done.stdout.split():
            if token.count("/") >= 2 and token[0].isalnum():
                return token.split("/")[1]
    return "unknown"


def run(settings: Settings) -> Path:
    """Runs the bench and returns the path of the Markdown table it wrote.

    An interrupted or failed run writes what it has under ``work/partial/`` instead, so the
    committed ``results/latest.*`` only ever hold complete runs."""
    started = dt.datetime.now(dt.UTC)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(settings)
    try:
        bench.run()
    except BaseException:
        partial = settings.work_dir / "partial"
        print(bench.write(started, partial), flush=True)
        print(f"bench did not finish; partial results in {partial}", file=sys.stderr)
        raise
    print(bench.write(started, settings.out_dir), flush=True)
    return settings.out_dir / "latest.md"
