"""The platform's own client transactions (RFC 3261 section 17.1): the final answer
is returned, a non-2xx is ACKed hop by hop, a request over UDP is sent again
(Timer A), and one nobody answers in time is CANCELled. The network is a router
that records what it is asked to send."""

from __future__ import annotations

import asyncio

from quietwire.protocols.clock import MonotonicClock
from quietwire.protocols.sip.message import Message, Response, reply
from quietwire.signaling.dialogs import Dialog, Party, Side
from quietwire.signaling.routing import ProxyAddress
from quietwire.signaling.targets import Target
from quietwire.signaling.uac import PlatformRequests

ADDRESS = ProxyAddress("d", "proxy.example", {"TLS": 5061, "TCP": 5060, "UDP": 5060}, "r1")


class Recorded:
    """A router (:class:`~quietwire.signaling.uac.Sender`) that keeps what it sends."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.arrived = asyncio.Event()

    async def send(self, target: Target, message: Message) -> bool:
        self.sent.append(message)
        self.arrived.set()
        return True


def invite_over(flow_id: str) -> tuple[Target, Dialog]:
    dialog = Dialog(
        "c1",
        1,
        Side("r1.1", "<sip:alice@192.0.2.1>", "<sip:alice@d>;tag=a"),
        Side(flow_id, "<sip:bob@192.0.2.2>", "<sip:bob@d>;tag=b"),
    )
    return Target.of_flow(flow_id), dialog


async def sent(router: Recorded, count: int) -> None:
    while len(router.sent) < count:
        router.arrived.clear()
        await asyncio.wait_for(router.arrived.wait(), 5)


async def test_a_final_answer_is_returned_and_a_refusal_acked() -> None:
    router = Recorded()
    uac = PlatformRequests(router, ADDRESS, MonotonicClock())
    target, dialog = invite_over("r1.2")
    invite = dialog.request("INVITE", Party.CALLEE, 9, ADDRESS.via)
    assert invite is not None
    sending = asyncio.create_task(uac.send(target, invite, timeout=5))
    await sent(router, 1)
    assert uac.receive(reply(invite, 180, "Ringing"))
    refused = reply(invite, 488, "Not Acceptable Here")
    assert uac.receive(refused)
    answer = await sending
    assert isinstance(answer, Response) and answer.status == 488
    ack = router.sent[-1]
    assert ack.method == "ACK" and ack.vias[0].branch == invite.vias[0].branch  # type: ignore[union-attr]
    assert len(uac) == 0
    assert not uac.receive(refused)  # nothing waits for it any more


async def test_over_udp_the_request_is_sent_again_then_cancelled_unanswered() -> None:
    router = Recorded()
    uac = PlatformRequests(router, ADDRESS, MonotonicClock())
    target, dialog = invite_over("r1.u2")
    invite = dialog.request("INVITE", Party.CALLEE, 9, ADDRESS.via)
    assert invite is not None
    assert await uac.send(target, invite, timeout=0.8) is None
    methods = [m.method for m in router.sent]  # type: ignore[union-attr]
    assert methods == ["INVITE", "INVITE", "CANCEL"]  # Timer A at 0.5 s, then given up
