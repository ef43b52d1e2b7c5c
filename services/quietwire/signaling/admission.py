"""Admission of SIP connections: caps on open connections, in total and per source.

A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix: a stranger
holding a /64 has 2^64 addresses to rotate through). Connections over a cap are
closed before the TLS handshake, so refusing one costs no crypto and no buffer.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter as Tally
from dataclasses import dataclass, field

from prometheus_client import Counter

REFUSED = Counter("quietwire_sip_connections_refused", "Connections refused by a cap", ["cap"])
#: Default caps (QW_SIP_MAX_CONNECTIONS, QW_SIP_MAX_CONNECTIONS_PER_SOURCE).
MAX_CONNECTIONS = 10_000
MAX_CONNECTIONS_PER_SOURCE = 64
#: IPv6 sources are counted by this prefix length.
IPV6_SOURCE_PREFIX = 64


@functools.lru_cache(maxsize=4096)  # every request asks, for a handful of sources
def source_key(host: str) -> str:
    """``192.0.2.1`` for IPv4 (and IPv4-mapped IPv6), ``2001:db8:1:2::/64`` for IPv6."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)


@dataclass(slots=True)
class ConnectionCaps:
    """Open connections, counted; :meth:`admit` says whether one more may open."""

    total: int
    per_source: int
    open: int = 0
    _open: Tally[str] = field(default_factory=Tally)

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host``; its source key, or None when refused."""
        key = source_key(host)
        if self.open >= self.total:
            REFUSED.labels("total").inc()
            return None
        if self._open[key] >= self.per_source:
            REFUSED.labels("source").inc()
            return None
        self._open[key] += 1
        self.open += 1
        return key

    def release(self, key: str) -> None:
        self.open -= 1
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
