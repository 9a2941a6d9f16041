"""A throwaway certificate authority for the control plane's gRPC port (xDS + usage).

``infery up`` and the end-to-end ``Stack`` make one per run directory so that the
default gateway runs with mutual TLS; ``infery certs`` writes the same files for
docker-compose or a Kubernetes Secret. Each process is then given three files:

    INFERY_XDS_TLS_CA_FILE    the CA: the server verifies client certificates with it,
                              clients verify the server's
    INFERY_XDS_TLS_CERT_FILE  this process's certificate (server or client)
    INFERY_XDS_TLS_KEY_FILE   its private key (mode 600)

The client certificate is the data plane's credential: it is all Envoy's config dump
shows a file path for, where a bearer token in gRPC metadata would show in clear.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One process's view: the CA it trusts, its own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        return {
            "INFERY_XDS_TLS_CA_FILE": str(self.ca),
            "INFERY_XDS_TLS_CERT_FILE": str(self.cert),
            "INFERY_XDS_TLS_KEY_FILE": str(self.key),
        }


@dataclass(frozen=True, slots=True)
class Pki:
    server: TlsFiles
    client: TlsFiles


def generate(directory: Path, server_names: Sequence[str] = ("127.0.0.1", "localhost")) -> Pki:
    """A CA, a server certificate for ``server_names`` (DNS names or IP addresses), a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infery throwaway CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, usage: x509.ObjectIdentifier, alt_names: Sequence[str]) -> TlsFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"infery {name}")]),
                ca_name,
                key.public_key(),
                now,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in alt_names]), critical=False
            )
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return TlsFiles(ca_path, cert_path, key_path)

    return Pki(
        server=leaf("server", ExtendedKeyUsageOID.SERVER_AUTH, server_names),
        client=leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, ()),
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
