"""Requests the platform itself sends into a dialog, as a UAC (RFC 3261 section 17.1):
MoveCall's re-INVITEs and the ACKs of their 2xx.

Each request runs in its own client transaction over the phone's flow (Timers
A/E retransmit over UDP, Timer B/F give up). Its responses come back through
the proxy: our Via names this replica (a response that reached another replica
is handed here) and its branch finds the transaction. The table holds only what
the platform started, never what a phone sends, and is capped all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

from quietwire.protocols.clock import Clock
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Message, Request, Response
from quietwire.protocols.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
)
from quietwire.signaling.builders import cancel_for
from quietwire.signaling.contexts import ClientTx
from quietwire.signaling.flows import reliable
from quietwire.signaling.routing import ProxyAddress
from quietwire.signaling.targets import Target

#: Platform requests waiting for their answer at once, at most.
MAX_PENDING = 4096


def with_cseq(message: Message, number: int) -> None:
    """Give ``message`` the CSeq ``number``, its method unchanged."""
    message.headers.set("CSeq", f"{number} {message.cseq.method}")


def ack_of_2xx(invite: Request, ok: Response, via: str) -> Request:
    """The ACK of a 2xx to our INVITE (RFC 3261 section 13.2.2.4): a request of its
    own (new branch), to the remote target the 2xx names, with the INVITE's CSeq
    number."""
    try:
        uri = str(ok.contacts[0].uri)
    except (ParseError, IndexError):
        uri = invite.uri
    ack = Request(method="ACK", uri=uri)
    ack.headers.add("Via", via)
    ack.headers.add("Max-Forwards", "70")
    for name in ("From", "Call-ID"):
        ack.headers.add(name, invite.headers.get(name) or "")
    ack.headers.add("To", ok.headers.get("To") or "")
    ack.headers.add("CSeq", f"{invite.cseq.number} ACK")
    ack.headers.add("Content-Length", "0")
    return ack


class Sender(Protocol):
    """Where the requests go: a :class:`~quietwire.signaling.targets.Router`."""

    async def send(self, target: Target, message: Message) -> bool:
        """Write ``message`` on the target flow; False if it is gone or full."""
        ...


@dataclass(eq=False)
class _Pending:
    tx: ClientTx
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class PlatformRequests:
    def __init__(self, router: Sender, address: ProxyAddress, clock: Clock) -> None:
        self.router, self.address, self.clock = router, address, clock
        self._waiting: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    async def send(self, target: Target, request: Request, timeout: float) -> Response | None:
        """``request`` (our Via on top) down ``target``'s flow: its final response, or
        None when the flow is gone, the transaction timed out, or no final response
        came within ``timeout`` seconds (an INVITE is then CANCELled)."""
        if len(self._waiting) >= MAX_PENDING:
            return None
        invite = request.method == "INVITE"
        tx: ClientTx = (
            ClientInviteTransaction(request, reliable(target.flow_id), self.clock)
            if invite
            else ClientNonInviteTransaction(request, reliable(target.flow_id), self.clock)
        )
        branch = request.vias[0].branch or ""
        pending = self._waiting[branch] = _Pending(tx)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                for message in tx.to_send:  # the request, its retransmissions, a non-2xx's ACK
                    if not await self.router.send(target, message):
                        return None
                tx.to_send.clear()
                for event in tx.to_tu:
                    if not isinstance(event, Response):
                        return None  # Timer B or F
                    if event.status >= 200:
                        return event
                tx.to_tu.clear()
                if tx.terminated:
                    return None
                left = deadline - loop.time()
                if left <= 0:
                    if invite:
                        await self.router.send(target, cancel_for(request, "no answer"))
                    return None
                due = tx.next_timer
                wake = left if due is None else max(0.0, min(left, due - self.clock.now()))
                pending.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pending.arrived.wait(), wake)
                tx.poll()
        finally:
            self._waiting.pop(branch, None)

    def receive(self, response: Response) -> bool:
        """Take ``response`` if it answers one of our requests."""
        try:
            branch = response.vias[0].branch or ""
        except (ParseError, IndexError):
            return False
        pending = self._waiting.get(branch)
        if pending is None or response.cseq.method != pending.tx.request.method:
            return False
        pending.tx.receive(response)
        pending.arrived.set()
        return True

    async def ack(self, target: Target, invite: Request, ok: Response) -> bool:
        """ACK a 2xx to our ``invite`` down ``target``'s flow."""
        return await self.router.send(
            target, ack_of_2xx(invite, ok, self.address.via(target.flow_id))
        )
