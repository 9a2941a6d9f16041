"""The gRPC channel to the control plane (xDS, usage reports, stored responses), with TLS when configured.

That port hands out provider keys, so in production it is served with TLS and
verifies client certificates (INFERY_XDS_TLS_*: the CA both sides trust, and this
process's own certificate and key). One function opens every channel to it, so
the xDS subscriber and the usage reporter cannot disagree about security.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


def channel_credentials(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials | None:
    """TLS credentials from the CA file (+ our client certificate and key files: mutual TLS).

    None without a CA: plain gRPC (a loopback or private control plane port). Which files go
    together is checked with the settings (ext_proc/settings.py).
    """
    if not ca:
        return None
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
