"""Retained secrets per peer ZID (RFC 6189 section 4.9): the ZID cache.

The engine reads and writes it through :class:`ZidCache`; where it lives is
the endpoint's business (the phone keeps it in a file). :class:`MemoryZidCache`
serves tests and short-lived endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What we remember about one peer."""

    rs1: bytes | None = field(default=None, repr=False)
    rs2: bytes | None = field(default=None, repr=False)
    #: The user compared the SAS with this peer and said it matched.
    sas_verified: bool = False

    def rotated(self, new_rs1: bytes) -> CacheEntry:
        """After a successful DH exchange: rs2 takes the old rs1, rs1 the new secret (4.6.1)."""
        return replace(self, rs1=new_rs1, rs2=self.rs1)


class ZidCache(Protocol):
    def get(self, peer_zid: bytes) -> CacheEntry | None: ...

    def put(self, peer_zid: bytes, entry: CacheEntry) -> None: ...


class MemoryZidCache:
    def __init__(self) -> None:
        self.entries: dict[bytes, CacheEntry] = {}

    def get(self, peer_zid: bytes) -> CacheEntry | None:
        return self.entries.get(peer_zid)

    def put(self, peer_zid: bytes, entry: CacheEntry) -> None:
        self.entries[peer_zid] = entry
