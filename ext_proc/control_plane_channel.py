"""The gRPC channel to the control plane (xDS and usage reports), with TLS when configured.

That port hands out provider keys, so in production it is served with TLS and
verifies client certificates (INFERY_XDS_TLS_*: the CA both sides trust, and this
process's own certificate and key). One function opens every channel to it, so
the xDS subscriber and the usage reporter cannot disagree about security.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc


def credentials_from_env(env: Mapping[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials from INFERY_XDS_TLS_CA_FILE (+ _CERT_FILE/_KEY_FILE: our client certificate).

    None when no CA is set: plain gRPC (a loopback or private control plane port).
    """
    env = os.environ if env is None else env
    ca, cert, key = (
        env.get(name, "").strip()
        for name in ("INFERY_XDS_TLS_CA_FILE", "INFERY_XDS_TLS_CERT_FILE", "INFERY_XDS_TLS_KEY_FILE")
    )
    if not ca:
        if cert or key:
            raise ValueError(
                "INFERY_XDS_TLS_CERT_FILE/_KEY_FILE need INFERY_XDS_TLS_CA_FILE (the server's CA)"
            )
        return None
    if bool(cert) != bool(key):
        raise ValueError("INFERY_XDS_TLS_CERT_FILE and INFERY_XDS_TLS_KEY_FILE go together")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=list(options))
