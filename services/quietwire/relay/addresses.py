"""Where the relay may send media: IP literals that the address policy permits.

The relay sends a leg's media only to the address that leg latched to, and
latches only to an address this policy permits; an SDP address it refuses is
never proof and never a destination. Names are refused, never resolved (a
resolver on the forwarding loop would block it, and DNS would choose where
media goes). By default the policy refuses what no phone on the Internet can
be: loopback, link-local, multicast, unspecified and reserved addresses
(``QW_RELAY_PEER_ALLOW`` lets some back in, e.g. loopback for ``quietwire
up``), and the platform's own networks (``QW_RELAY_PEER_DENY``: pod, service
and node ranges), which take precedence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from quietwire.relay.metrics import REFUSED_ADDRESS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Ip = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[str, int]


def networks(value: str) -> tuple[Network, ...]:
    """Comma-separated networks (``10.0.0.0/8, 127.0.0.1``); ValueError names a bad one."""
    found = []
    for item in value.split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{item.strip()!r} is not an IP network") from None
    return tuple(found)


def _refused_by_default(ip: Ip) -> bool:
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or (ip.is_reserved)
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """``allow``: networks let back in from the default refusals; ``deny``: networks
    always refused."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[Network] = (), deny: Iterable[Network] = ()) -> AddressPolicy:
        return cls(tuple(allow), tuple(deny))

    def permits(self, host: str) -> bool:
        """Whether media may go to (and latch on) ``host``: an IP literal, not refused."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.deny):
            return False
        return not _refused_by_default(ip) or any(ip in network for network in self.allow)

    def peer(self, address: Address | None) -> Address | None:
        """``address`` if the policy permits it, else None (counted)."""
        if address is None or self.permits(address[0]):
            return address
        REFUSED_ADDRESS.inc()
        return None
