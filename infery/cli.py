"""``infery up``: the whole gateway on one machine, in the foreground.

Without ``--config`` it runs on embedded defaults: SQLite under ``.infery/``,
in-process limits, and local simulated providers (OpenAI, Anthropic and
Gemini wire formats) so that it works with no provider keys and no internet.
Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import sys
import threading
from pathlib import Path

import yaml
from infery_proto.settings import InferySettings, SettingsError, version

from control_plane.batches.settings import BatchSettings
from control_plane.files.settings import FilesSettings
from control_plane.settings import Settings as ControlPlaneSettings
from ext_proc.settings import ExtProcSettings
from infery.certs import generate
from infery.settings import CliSettings
from infery.stack import (
    Ports,
    Process,
    Stack,
    default_home,
    render_bootstrap,
    spawn,
    wait_until,
    write_ext_proc_token,
)
from simulators.command import command

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
_READY = re.compile(r"ready \S+ http://127\.0\.0\.1:(\d+)")


def _secret_file(path: Path, prefix: str) -> str:
    """A secret kept across restarts, created once with owner-only permissions."""
    if path.exists():
        path.chmod(0o600)  # a copy made with looser permissions is tightened again
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def _start_simulators(home: Path, provider_key: str, procs: list[Process]) -> dict[str, str]:
    """Start the demo providers, appending each to ``procs``; returns their URLs for demo.yaml."""
    env: dict[str, str] = {"INFERY_DEMO_PROVIDER_KEY": provider_key}
    roots = {
        "openai": "http://127.0.0.1:{}/v1",
        "anthropic": "http://127.0.0.1:{}",
        "google": "http://127.0.0.1:{}",
    }
    for kind, root in roots.items():
        proc = spawn(f"sim_{kind}", command(kind, api_key=provider_key, chunk_delay_ms=20), home / "logs")
        procs.append(proc)
        wait_until(lambda p=proc: _READY.search(p.log()), f"the {kind} simulator", 30, [proc])
        ready = _READY.search(proc.log())
        assert ready is not None
        env[f"INFERY_DEMO_{kind.upper()}_URL"] = root.format(ready.group(1))
    return env


def _banner(stack: Stack, admin_token_source: str, demo_key: str | None, home: Path) -> str:
    lines = [
        "",
        "Infery Gateway is up.",
        f"  OpenAI-compatible API : {stack.base_url}",
        f"  admin API + docs      : {stack.admin_url}/docs",
        f"  dashboard             : {stack.admin_url}/dashboard",
        f"  admin token           : {admin_token_source}",
    ]
    if demo_key:
        lines += [
            f"  demo key              : {demo_key}",
            "",
            "Try it with the OpenAI SDK:",
            "",
            "  from openai import OpenAI",
            f'  client = OpenAI(base_url="{stack.base_url}", api_key="{demo_key}")',
            '  reply = client.chat.completions.create(model="gpt-4o-mini",',
            '                                         messages=[{"role": "user", "content": "Hello!"}])',
            "  print(reply.choices[0].message.content)",
            "",
            "  (chat: gpt-4o-mini, gpt-4o, claude-sonnet-4-5, gemini-2-5-flash;",
            "   embeddings: text-embedding-3-small; images: gpt-image-1, dall-e-3;",
            f"   files: client.files.create(...), stored at {stack.files_env()['INFERY_FILES_URL']};",
            "   speech: tts-1, gpt-4o-mini-tts; transcriptions and translations: whisper-1,",
            "   gpt-4o-transcribe, gemini-2-5-flash)",
        ]
    lines += ["", f"Logs: {home / 'logs'}/   Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def up(args: argparse.Namespace, settings: CliSettings) -> int:
    home = Path(settings.home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    # The admin token never goes to the output (it ends up in logs): the banner says where it is.
    if settings.admin_token:
        admin_token, token_source = settings.admin_token, "from INFERY_ADMIN_TOKEN"
    else:
        token_file = home / "admin-token"
        admin_token, token_source = _secret_file(token_file, "adm_"), f"in {token_file} (mode 600)"
    env = {"INFERY_ADMIN_TOKEN": admin_token}
    if not settings.database_url:
        env["INFERY_DATABASE_URL"] = f"sqlite:///{home / 'infery.db'}"
    if settings.files_url:
        env["INFERY_FILES_URL"] = settings.files_url
    simulators: list[Process] = []  # filled as they start, so a failure stops those already up
    stack = Stack(home, Ports.of(settings), env)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        demo_key = None
        if args.config:
            env["INFERY_CONFIG"] = str(Path(args.config).resolve())
        else:
            demo_key = _secret_file(home / "demo-key", "inf_")
            provider_key = _secret_file(home / "demo-provider-key", "sk-demo-")
            env |= _start_simulators(home, provider_key, simulators)
            env |= {"INFERY_DEMO_KEY": demo_key, "INFERY_CONFIG": str(DEMO_CONFIG)}
        stack.start()
        print(_banner(stack, token_source, demo_key, home), flush=True)
        parent = os.getppid()
        while not stop.wait(0.5):
            if os.getppid() != parent:  # whoever started us (make, a shell) is gone: so are we
                return 1
            dead = [name for name, p in stack.processes.items() if not p.alive()]
            if dead:
                print(f"stopping: {', '.join(dead)} exited (see {home / 'logs'})", file=sys.stderr)
                return 1
        return 0
    except Exception as exc:
        print(f"infery up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        for proc in simulators:
            proc.stop()
        print("stopped.", flush=True)


# Every process's settings model, as its --help and README.md's "Settings" name it.
SETTINGS: tuple[tuple[str, type[InferySettings]], ...] = (
    ("the control plane (`python -m control_plane`)", ControlPlaneSettings),
    ("each ext_proc process (`python -m ext_proc`)", ExtProcSettings),
    (
        "the `infery` commands (`infery up`, `bootstrap`, `certs`; the image's `infery-entrypoint`)",
        CliSettings,
    ),
    ("the files service (`python -m control_plane.files`)", FilesSettings),
    ("each batch worker (`python -m control_plane.batches`)", BatchSettings),
)


def _help_text() -> str:
    return "\n\n".join(model.help_text(f"environment variables of {who}") for who, model in SETTINGS)


def settings_tables() -> str:
    """README.md's "Settings" tables (`infery settings` prints them; a test keeps README.md equal)."""
    return "\n\n".join(f"Read by {who}:\n\n{model.markdown_table()}" for who, model in SETTINGS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="infery",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="run the gateway in the foreground")
    p_up.add_argument("--config", help="a gateway.yaml to load at start (default: the embedded demo)")
    p_boot = sub.add_parser("bootstrap", help="print Envoy's bootstrap for one replica")
    p_boot.add_argument("--xds-host", default="127.0.0.1", help="the control plane's host")
    p_boot.add_argument("--node-id", default="infery-envoy-0")
    p_boot.add_argument(
        "--files-host",
        default="",
        help="the files service's host, on INFERY_FILES_PORT (default: the --xds-host); with"
        " INFERY_XDS_TLS_* Envoy presents the same client certificate to it",
    )
    p_boot.add_argument(
        "--ext-proc-uds",
        action="append",
        default=[],
        metavar="PATH",
        help="reach ext_proc on this Unix socket instead of its port (repeat for several processes)",
    )
    p_boot.add_argument(
        "--admin-socket",
        default="/tmp/infery-envoy-admin.sock",
        help="Envoy's admin on this Unix socket (mode 600); it is never on TCP",
    )
    p_boot.add_argument(
        "--ext-proc-token-file",
        default="",
        metavar="PATH",
        help="with ext_proc on TCP: write INFERY_EXT_PROC_TOKEN here (mode 600) for Envoy to send",
    )
    p_certs = sub.add_parser(
        "certs", help="write a throwaway CA and certificates for the control plane's TLS"
    )
    p_certs.add_argument(
        "--out", required=True, help="directory for ca.pem, server(-key).pem, client(-key).pem"
    )
    p_certs.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="a DNS name or IP address that clients use for the control plane (repeat; default: 127.0.0.1)",
    )
    sub.add_parser("settings", help="print every INFERY_* variable, its default and meaning (markdown)")
    args = parser.parse_args(argv)
    if args.command == "settings":
        print(settings_tables())
        return
    try:
        settings = CliSettings.from_env()
    except SettingsError as exc:
        parser.error(str(exc))
    if args.command == "up":
        sys.exit(up(args, settings))
    if args.command == "bootstrap":
        sys.exit(bootstrap(args, settings))
    if args.command == "certs":
        pki = generate(Path(args.out), args.server_name or ("127.0.0.1",))
        print(
            f"wrote {pki.server.ca}, {pki.server.cert}, {pki.server.key}, {pki.client.cert}, {pki.client.key}"
        )


def bootstrap(args: argparse.Namespace, settings: CliSettings) -> int:
    """Print one replica's Envoy bootstrap; its credentials come from files, never inline."""
    token = (settings.ext_proc_token or "").strip()
    token_file = ""
    if not args.ext_proc_uds:
        if not token or not args.ext_proc_token_file:
            print(
                "ext_proc on TCP needs INFERY_EXT_PROC_TOKEN and --ext-proc-token-file (or --ext-proc-uds)",
                file=sys.stderr,
            )
            return 2
        token_file = str(Path(args.ext_proc_token_file).resolve())
        write_ext_proc_token(Path(token_file), token)
    doc = render_bootstrap(
        Ports.of(settings),
        args.node_id,
        admin_socket=args.admin_socket,
        xds_host=args.xds_host,
        xds_token=settings.xds_token or "",
        xds_tls=settings.xds_tls(),
        ext_proc_sockets=args.ext_proc_uds,
        ext_proc_token_file=token_file,
        files_host=args.files_host or args.xds_host,
        settings=settings,
    )
    print(yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    main()
