"""The seam where calls get their media plan (keyagreement and relays, later).

Until the media issue lands, :class:`Passthrough` leaves SDP as the phones
wrote it; the proxy already calls it at every offer and answer, and honours a
refusal (``488 Not Acceptable Here`` with a Warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    warning: str


class MediaPlanner(Protocol):
    async def offer(self, call_id: str, caller: str, callee: str, sdp: bytes) -> bytes | Refusal:
        """The SDP to forward for an offer, or why the call is refused."""
        ...

    async def answer(self, call_id: str, sdp: bytes) -> bytes | Refusal: ...

    async def end(self, call_id: str) -> None: ...


class Passthrough:
    async def offer(self, call_id: str, caller: str, callee: str, sdp: bytes) -> bytes | Refusal:
        return sdp

    async def answer(self, call_id: str, sdp: bytes) -> bytes | Refusal:
        return sdp

    async def end(self, call_id: str) -> None:
        return None
