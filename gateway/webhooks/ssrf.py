"""Which addresses a webhook may be dialled at (reference: reliability 5.2).

A URL's host is resolved once; if ANY of its addresses is not public (private, loopback,
link-local, CGNAT, multicast, reserved, unspecified, ...) and not inside an operator's
``allowed_networks``, the delivery is refused. The caller then connects to one of exactly
these vetted addresses (workers/providers/webhook_http.py), so a second lookup that a DNS
rebinding attacker could answer differently never happens.

IPv4-mapped (``::ffff:a.b.c.d``), 6to4 (``2002::/16``), Teredo and NAT64 (``64:ff9b::/96``)
addresses are judged by the IPv4 address they carry as well.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata names, refused whatever they resolve to.
BLOCKED_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata.amazonaws.com",
    "instance-data", "instance-data.ec2.internal", "metadata.azure.com",
})
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """The target is not allowed; the message says why (no secrets in it)."""


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _embedded_v4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    out = []
    if addr.ipv4_mapped is not None:
        out.append(addr.ipv4_mapped)
    if addr.sixtofour is not None:
        out.append(addr.sixtofour)
    if addr.teredo is not None:
        out.append(addr.teredo[1])
    if addr in NAT64:
        out.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return out


def _public(addr: IPAddress) -> bool:
    return (
        addr.is_global
        and not addr.is_multicast
        and not addr.is_reserved
        and not addr.is_unspecified
        and not addr.is_loopback
        and not addr.is_link_local
        and not addr.is_private
    )


def address_allowed(ip: str | IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Whether ``ip`` may be dialled: public, or inside one of the ``allowed`` networks."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if ip.ipv4_mapped is not None:
            candidates = [ip.ipv4_mapped]  # a mapped address IS the IPv4 one
        else:
            candidates += embedded
    for addr in candidates:
        if any(addr.version == net.version and addr in net for net in allowed):
            continue
        if not _public(addr):
            return False
    return True


def vet(host: str, addresses: Iterable[str], allowed: Sequence[IPNetwork] = ()) -> list[str]:
    """The addresses to dial for ``host``; Refused if the name or any address is not allowed."""
    name = host.rstrip(".").lower()
    if name in BLOCKED_NAMES:
        raise Refused(f"{host} is a cloud metadata name")
    unique = list(dict.fromkeys(addresses))
    if not unique:
        raise Refused(f"{host} has no address")
    for ip in unique:
        if not address_allowed(ip, allowed):
            raise Refused(f"{host} resolves to {ip}, which is not a public address "
                          "(allow it with webhooks.allowed_networks)")
    return unique
