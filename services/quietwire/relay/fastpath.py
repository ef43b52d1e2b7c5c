"""The relay's fast path: settled RTP between sockets connected to the phones.

Once a call's path is settled — the sending phone latched, the other phone's
address known — each leg gets a second socket bound to its RTP port and
``connect()``-ed to its phone (:class:`PhoneSocket`). The kernel delivers a
phone's packets to the socket connected to it, the more specific match, while
the leg's listening socket keeps receiving everyone else's (strangers still
reach the full path and are counted), so the fast path checks no address, and
it sends without an address lookup or a route lookup per packet.

Every phone socket sits in one epoll set (:class:`FastPaths`); the event loop
watches the set's descriptor and drains it in one callback. Per packet that
is one receive, one send and a few lines of Python; what is not settled RTP
(RTCP multiplexed on the port, ZRTP, STUN) is handed to the full path.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable
from typing import Generic, TypeVar

from quietwire.relay.metrics import SEND_ERROR

Address = tuple[str, int]
Owner = TypeVar("Owner")
MAX_PACKET = 2048
RTP_HEADER = 12


class PhoneSocket(Generic[Owner]):
    """A leg's RTP port, connected to the leg's phone. ``forward_to`` is where
    RTP from this phone goes on the fast path (None: everything takes the full
    path); ``packets``, ``bytes`` and ``last`` count it until folded."""

    __slots__ = ("bytes", "forward_to", "last", "owner", "packets", "peer", "sock")

    def __init__(self, family: socket.AddressFamily, port: Address, peer: Address, owner: Owner):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.sock.bind(port)
            self.sock.connect(peer)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.peer, self.owner = peer, owner
        self.forward_to: PhoneSocket[Owner] | None = None
        self.packets = self.bytes = 0
        self.last = b""

    def queued(self) -> list[tuple[bytes, Address]]:
        """What is waiting in the socket: packets that arrived before it was
        connected (from anyone) or before it was closed."""
        found = []
        while True:
            try:
                found.append(self.sock.recvfrom(MAX_PACKET))
            except (BlockingIOError, InterruptedError):
                return found
            except OSError:
                continue


class FastPaths(Generic[Owner]):
    """The epoll set of all phone sockets of one relay. ``full_path`` takes
    what is not for the fast path: a phone socket's owner, the packet, its source."""

    def __init__(self, full_path: Callable[[Owner, bytes, Address], None]) -> None:
        self.full_path = full_path
        self._epoll = select.epoll()
        self._sockets: dict[int, PhoneSocket[Owner]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._sockets)

    def open(
        self, family: socket.AddressFamily, port: Address, peer: Address, owner: Owner
    ) -> PhoneSocket[Owner]:
        """A phone socket on ``port`` connected to ``peer``, in the set."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        phone = PhoneSocket(family, port, peer, owner)
        self._sockets[phone.sock.fileno()] = phone
        self._epoll.register(phone.sock.fileno(), select.EPOLLIN)
        self._hand_over(phone)
        return phone

    def close(self, phone: PhoneSocket[Owner], keep_queued: bool = True) -> None:
        """Out of the set and closed; what was queued goes to the full path
        (unless the call is ending)."""
        fd = phone.sock.fileno()
        if self._sockets.pop(fd, None) is None:
            return
        self._epoll.unregister(fd)
        if keep_queued:
            self._hand_over(phone)
        phone.sock.close()

    def shutdown(self) -> None:
        for phone in list(self._sockets.values()):
            self.close(phone, keep_queued=False)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _hand_over(self, phone: PhoneSocket[Owner]) -> None:
        # Later, not now: the caller may be in the middle of changing the call.
        assert self._loop is not None
        for data, source in phone.queued():
            self._loop.call_soon(self.full_path, phone.owner, data, source)

    def _ready(self) -> None:
        sockets = self._sockets
        for fd, _ in self._epoll.poll(0):
            phone = sockets.get(fd)
            if phone is None:
                continue
            try:
                data = phone.sock.recv(MAX_PACKET)
            except OSError:  # an ICMP error from the phone, reported on the next receive
                continue
            forward_to = phone.forward_to
            # RTP (RFC 7983: first byte 128-191; RTCP's second byte is 192-223), at
            # least a header long; anything else, however short, takes the full path.
            if (
                forward_to is not None
                and len(data) >= RTP_HEADER
                and 127 < data[0] < 192
                and not 191 < data[1] < 224
            ):
                phone.packets += 1
                phone.bytes += len(data)
                phone.last = data
                try:
                    forward_to.sock.send(data)
                except OSError:
                    SEND_ERROR.inc()
            else:
                self.full_path(phone.owner, data, phone.peer)
