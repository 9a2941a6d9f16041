"""Provider connections over TLS: the certificate must be trusted *and* name the provider's host.

A certificate signed by a trusted CA for another name must never receive a request
(it would collect the provider's API key).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.support import Admin, new_tenant, start_gateway

COMPLETION = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _cert(
    subject: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.write_bytes(data)


class Provider:
    """An OpenAI-shaped HTTPS server on loopback that records the credentials it was sent."""

    def __init__(self, cert_file: Path) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(self.headers.get("authorization"))
                body = json.dumps(COMPLETION).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[Path, Provider, Provider]]:
    ca, ca_key = _cert("Infery Test CA", None, None, ca=True)
    _pem(tmp_path / "ca.pem", ca)
    for name in ("localhost", "evil.example"):
        cert, key = _cert(name, ca_key, ca.subject)
        _pem(tmp_path / f"{name}.pem", cert, key)
    good, evil = Provider(tmp_path / "localhost.pem"), Provider(tmp_path / "evil.example.pem")
    try:
        yield tmp_path / "ca.pem", good, evil
    finally:
        good.close()
        evil.close()


def test_only_a_certificate_for_the_providers_host_gets_the_key(tmp_path: Path, pki) -> None:
    ca_file, good, evil = pki
    stack = start_gateway(tmp_path / "gw", INFERY_UPSTREAM_CA_FILE=str(ca_file))
    try:
        admin = Admin(stack.admin_url)
        admin.provider("good", "openai", f"https://localhost:{good.port}/v1", "sk-good-secret")
        admin.provider("evil", "openai", f"https://localhost:{evil.port}/v1", "sk-evil-secret")
        admin.model("via-good", "good", "m")
        admin.model("via-evil", "evil", "m")
        tenant = new_tenant(admin, stack, "tls")

        def chat(model: str) -> httpx.Response:
            return httpx.post(
                f"{stack.base_url}/chat/completions",
                headers={"authorization": f"Bearer {tenant.key}"},
                json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                timeout=15,
            )

        served = chat("via-good")
        assert served.status_code == 200, served.text
        assert good.received == ["Bearer sk-good-secret"]

        refused = chat("via-evil")
        assert refused.status_code in (502, 503), refused.text
        assert refused.json()["error"]["code"] in ("upstream_error", "upstream_unavailable")
        assert evil.received == []  # the wrong-name server never saw a request, nor the key
    finally:
        stack.stop()
