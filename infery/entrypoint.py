"""The container image's ENTRYPOINT: one image, and the first argument picks the role.

    control-plane [ARGS]   python -m control_plane
    ext-proc [ARGS]        python -m ext_proc
    envoy [ARGS]           `infery bootstrap ARGS` into /tmp/envoy.yaml, then Envoy on it
    healthcheck            the image's HEALTHCHECK (see below)
    anything else          run as given (`infery certs ...`, `sh`, ...)

The role replaces this process (exec), so signals reach it directly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

from infery.settings import CliSettings

ENVOY_CONFIG = "/tmp/envoy.yaml"


def healthcheck() -> int:
    """0 when this container's role answers: ``INFERY_HEALTH_URL`` returns 2xx (default: the control
    plane's /healthz), or with ``INFERY_HEALTH_PORT`` set, that loopback TCP port accepts."""
    try:
        settings = CliSettings.from_env()
        if settings.health_port:
            with socket.create_connection(("127.0.0.1", settings.health_port), timeout=3):
                return 0
        with urllib.request.urlopen(settings.health_url, timeout=3) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (OSError, ValueError):  # SettingsError is a ValueError
        return 1


def _exec(argv: list[str]) -> None:
    os.execvp(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["control-plane"]
    role, rest = args[0], args[1:]
    if role == "healthcheck":
        return healthcheck()
    if role == "control-plane":
        _exec([sys.executable, "-m", "control_plane", *rest])
    if role == "ext-proc":
        _exec([sys.executable, "-m", "ext_proc", *rest])
    if role == "envoy":
        with open(ENVOY_CONFIG, "w") as out:
            done = subprocess.run([sys.executable, "-m", "infery.cli", "bootstrap", *rest], stdout=out)
        if done.returncode != 0:
            return done.returncode
        _exec(["envoy", "-c", ENVOY_CONFIG, "--disable-hot-restart"])
    _exec(args)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
