"""The files service's settings, read once from the environment; every one has a working default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from control_plane.settings import DEFAULT_DATABASE_URL

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
# OpenAI's bounds for expires_after[seconds]: one hour to 30 days.
MIN_EXPIRES_AFTER_S = 3600
MAX_EXPIRES_AFTER_S = 30 * 24 * 3600


def default_storage_url() -> str:
    """A directory under ``.infery/`` in the working directory (the checkout for `make up`)."""
    return (Path.cwd() / ".infery" / "files").resolve().as_uri()


@dataclass(frozen=True, slots=True)
class FilesSettings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8082
    # file:///path (a local directory) or s3://bucket/prefix (endpoint and credentials from the
    # standard AWS_* variables: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
    storage_url: str = ""
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # The smallest expires_after[seconds] accepted (OpenAI's: 3600). Lower only for tests.
    min_expires_after_s: int = MIN_EXPIRES_AFTER_S
    # How often expired files and abandoned uploads are deleted, and when an upload counts
    # as abandoned (a live one is cut by Envoy's INFERY_REQUEST_RECEIVE_TIMEOUT_S long before).
    sweep_interval_s: float = 60.0
    abandoned_after_s: int = 24 * 3600
    # Mutual TLS: this service's certificate and key, and the CA that Envoy's client
    # certificate must chain to. Default: the control plane's (INFERY_XDS_TLS_*).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FilesSettings:
        env = os.environ if env is None else env

        def text(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        def number(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
            return value

        settings = cls(
            database_url=text("INFERY_DATABASE_URL") or DEFAULT_DATABASE_URL,
            host=text("INFERY_FILES_HOST") or "127.0.0.1",
            port=number("INFERY_FILES_PORT", 8082),
            storage_url=text("INFERY_FILES_URL") or default_storage_url(),
            max_file_bytes=number("INFERY_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES),
            min_expires_after_s=number("INFERY_FILES_MIN_EXPIRES_AFTER_S", MIN_EXPIRES_AFTER_S),
            sweep_interval_s=float(number("INFERY_FILES_SWEEP_INTERVAL_S", 60)),
            tls_cert_file=text("INFERY_FILES_TLS_CERT_FILE", "INFERY_XDS_TLS_CERT_FILE"),
            tls_key_file=text("INFERY_FILES_TLS_KEY_FILE", "INFERY_XDS_TLS_KEY_FILE"),
            tls_ca_file=text("INFERY_FILES_TLS_CA_FILE", "INFERY_XDS_TLS_CA_FILE"),
        )
        if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
            raise ValueError("the files service's TLS certificate and key go together")
        if settings.tls_ca_file and not settings.tls_cert_file:
            raise ValueError("client certificates (a TLS CA file) need the service's own certificate")
        if not settings.storage_url.startswith(("file://", "s3://")):
            raise ValueError(
                f"INFERY_FILES_URL must be file:///path or s3://bucket/prefix, got {settings.storage_url!r}"
            )
        return settings
