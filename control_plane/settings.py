"""Control-plane settings, read once from the environment.

Everything has a default that works on a laptop (`make up`), so a fresh checkout
starts with no configuration at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./.infery/infery.db"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_ADMIN_TOKEN_FILE = "./.infery/admin-token"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    admin_token: str | None = None
    admin_port: int = 8081
    xds_port: int = 18000
    listen_port: int = 8080
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    config_path: str | None = None
    host: str = "127.0.0.1"
    # Where a generated admin token is written (mode 600): never to the log.
    admin_token_file: str = DEFAULT_ADMIN_TOKEN_FILE
    # The gRPC port (xDS + usage) with TLS: this server's certificate and key, and the CA
    # that client certificates must chain to (set: every client must present one).
    xds_tls_cert_file: str | None = None
    xds_tls_key_file: str | None = None
    xds_tls_ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            # An empty variable means "not set": `INFERY_ADMIN_TOKEN= make up` must not set an empty token.
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
            return value

        if bool(text("INFERY_XDS_TLS_CERT_FILE")) != bool(text("INFERY_XDS_TLS_KEY_FILE")):
            raise ValueError("INFERY_XDS_TLS_CERT_FILE and INFERY_XDS_TLS_KEY_FILE go together")
        if text("INFERY_XDS_TLS_CA_FILE") and not text("INFERY_XDS_TLS_CERT_FILE"):
            raise ValueError("INFERY_XDS_TLS_CA_FILE (client certificates) needs INFERY_XDS_TLS_CERT_FILE")

        return cls(
            database_url=text("INFERY_DATABASE_URL") or DEFAULT_DATABASE_URL,
            admin_token=text("INFERY_ADMIN_TOKEN"),
            admin_token_file=text("INFERY_ADMIN_TOKEN_FILE") or DEFAULT_ADMIN_TOKEN_FILE,
            xds_tls_cert_file=text("INFERY_XDS_TLS_CERT_FILE"),
            xds_tls_key_file=text("INFERY_XDS_TLS_KEY_FILE"),
            xds_tls_ca_file=text("INFERY_XDS_TLS_CA_FILE"),
            admin_port=number("INFERY_ADMIN_PORT", 8081),
            xds_port=number("INFERY_XDS_PORT", 18000),
            listen_port=number("INFERY_LISTEN_PORT", 8080),
            max_request_bytes=number("INFERY_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            config_path=text("INFERY_CONFIG"),
            host=text("INFERY_HOST") or "127.0.0.1",
        )
