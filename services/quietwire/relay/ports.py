"""The relay's UDP port pool: RTP on even ports, RTCP on the odd port above
(RFC 3550 section 11), from the configured range. A pair is bound when taken
and closed when given back, so a released call leaves nothing listening.

Each pair is drawn at random (``secrets``) from the free ones: a stranger
cannot tell which port a ringing phone's leg will get from the ports of the
calls before it.

A port held by another program is skipped (it is bound without SO_REUSEPORT);
once ours, SO_REUSEPORT is set so the fast path can bind a second socket to it
and connect that one to the phone."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass


class PoolExhausted(Exception):
    """No free port pair left."""


@dataclass(eq=False)
class PortPair:
    rtp: socket.socket
    rtcp: socket.socket
    #: The RTP port (RTCP's is the one above).
    port: int

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class PortPool:
    def __init__(self, bind: str, first: int, last: int) -> None:
        self.bind = bind
        self._free: list[int] = list(range(first, last - 1 + 1, 2))
        self.size = len(self._free)
        self.in_use: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    def take(self) -> PortPair:
        """Bind a free pair drawn at random; ports another program holds are skipped
        (and stay free for a later draw)."""
        held: list[int] = []
        while self._free:
            port = self._draw()
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind((self.bind, port))
                rtcp.bind((self.bind, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                held.append(port)
                continue
            for sock in (rtp, rtcp):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setblocking(False)
            self.in_use.add(port)
            self._free.extend(held)
            return PortPair(rtp, rtcp, port)
        self._free.extend(held)
        raise PoolExhausted("no free relay port pair")

    def _draw(self) -> int:
        """A free port at random, out of the free list (swapped with the last: O(1))."""
        free = self._free
        index = secrets.randbelow(len(free))
        free[index], free[-1] = free[-1], free[index]
        return free.pop()

    def give_back(self, pair: PortPair) -> None:
        port = pair.port
        pair.close()
        if port in self.in_use:
            self.in_use.discard(port)
            self._free.append(port)
