"""Hosts a provider's ``base_url`` may never name: link-local and cloud metadata services.

The gateway sends the provider's api_key to its base_url. On a cloud VM the
metadata service (169.254.169.254, fd00:ec2::254, metadata.google.internal, ...)
answers anyone on the machine with the instance's own credentials, so a base_url
pointing there would turn the gateway into a proxy for them. Ordinary private
addresses stay allowed: self-hosted OpenAI-compatible servers live there.

The check is on the URL's host as written (no DNS lookup): a literal address in any
form ``getaddrinfo`` accepts (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, IPv4-mapped
IPv6) and the well-known metadata names.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OpenStack, ... metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS's IPv6 metadata service
        "100.100.100.200/32",  # Alibaba Cloud's metadata service
    )
)
_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
    }
)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the legacy IPv4 spellings getaddrinfo (and so Envoy's resolver) still accept
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_host_reason(base_url: str) -> str | None:
    """Why ``base_url``'s host may not receive a provider key, or None when it may."""
    host = (urlsplit(base_url).hostname or "").lower().rstrip(".")
    if host in _NAMES:
        return f"{host} is a cloud metadata service"
    address = _address(host)
    if address is not None and any(address in network for network in _NETWORKS):
        return f"{host} is a link-local or cloud metadata address"
    return None
