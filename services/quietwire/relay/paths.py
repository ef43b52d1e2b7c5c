"""A settled call's short cuts past the full path: phone sockets, or the kernel.

Once a call's RTP flows between two latched phones, its packets need no
decision: they take the fast path (:mod:`quietwire.relay.fastpath`: sockets
connected to the phones), or, with kernel forwarding, never reach the process
(:mod:`quietwire.relay.kernel`). This module opens those paths and takes them
down when latching or the SDP moves a phone; the engine decides when.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine

from quietwire.relay.addresses import Address
from quietwire.relay.fastpath import FastPaths
from quietwire.relay.kernel import KernelPathError, KernelPaths, Link
from quietwire.relay.latch import Channel
from quietwire.relay.legs import Leg, Phone, RelayCall
from quietwire.runtime.aio import Tasks
from quietwire.runtime.streams import stream_log_fields

log = logging.getLogger(__name__)
Owner = tuple[RelayCall, Leg]


class SettledPaths:
    """``full_path`` takes what a phone socket receives that is not settled RTP."""

    def __init__(self, full_path: Callable[[Owner, bytes, Address], None]) -> None:
        self.fast: FastPaths[Owner] = FastPaths(full_path)
        #: Set (started) when settled calls are forwarded by the kernel instead.
        self.kernel: KernelPaths | None = None
        self._kernel_work = Tasks()

    def open(
        self, call: RelayCall, leg: Leg, other: Leg, source: Address, destination: Address
    ) -> None:
        """From now on RTP from ``leg``'s latched phone goes straight to ``other``'s."""
        if leg.latch.address(Channel.RTP) != source or (leg.phone and leg.phone.peer != source):
            return
        if self.kernel is not None:
            if call.link is None:
                self._link(call, Link(source, leg.pair.port, destination, other.pair.port))
            return
        try:
            if leg.phone is None:
                leg.phone = self._phone(call, leg, source)
            if other.phone is None:
                other.phone = self._phone(call, other, destination)
        except OSError as exc:
            extra = {**stream_log_fields(call.call_id), "error": str(exc)}
            log.warning("no fast path", extra=extra)
            return
        leg.phone.forward_to = other.phone

    def settle(self, call: RelayCall) -> None:
        """Latching or the SDP may have moved a leg's phone: a kernel link or a phone
        socket to where it no longer is goes, and every socket fast path is taken
        down (the next RTP packet through the full path sets it up again). Fold
        the fast paths' counts first."""
        link = call.link
        if link is not None and (link.a, link.b) != _phones(call, link):
            self._unlink(call)
        for leg in call.legs.values():
            if leg.phone is not None:
                leg.phone.forward_to = None
                if leg.phone.peer != leg.latch.address(Channel.RTP):
                    self.fast.close(leg.phone)
                    leg.phone = None

    def release(self, call: RelayCall) -> None:
        """The call ended: its paths go, what they had queued with them."""
        self._unlink(call)
        for leg in call.legs.values():
            if leg.phone is not None:
                self.fast.close(leg.phone, keep_queued=False)

    async def close(self) -> None:
        self.fast.shutdown()
        await self._kernel_work.wait()
        if self.kernel is not None:
            await self.kernel.close()

    def _phone(self, call: RelayCall, leg: Leg, peer: Address) -> Phone:
        rtp = leg.pair.rtp
        return self.fast.open(rtp.family, rtp.getsockname()[:2], peer, (call, leg))

    def _link(self, call: RelayCall, link: Link) -> None:
        assert self.kernel is not None
        call.link, again = link, call.linked
        call.linked = True
        self._in_order(call, self.kernel.link(link, forget=again))

    def _unlink(self, call: RelayCall) -> None:
        if call.link is not None and self.kernel is not None:
            self._in_order(call, self.kernel.unlink(call.link))
            call.link = None

    def _in_order(self, call: RelayCall, change: Coroutine[None, None, None]) -> None:
        """Kernel changes run one after the other, in the order asked (the kernel
        paths' one thread), never blocking the forwarding."""

        async def run() -> None:
            try:
                await change
            except KernelPathError as exc:
                extra = {**stream_log_fields(call.call_id), "error": str(exc)}
                log.warning("kernel path not changed", extra=extra)

        self._kernel_work.spawn(run())


def _phones(call: RelayCall, link: Link) -> tuple[Address | None, Address | None]:
    """Where the linked legs' phones are now (by their relay ports)."""
    by_port = {leg.pair.port: leg.latch.address(Channel.RTP) for leg in call.legs.values()}
    return by_port.get(link.a_port), by_port.get(link.b_port)
