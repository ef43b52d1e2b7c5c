"""UDP peers are handled apart (real sockets, the real listener): a peer whose
request waits (on Redis, on a call's plan) holds up no other peer; each peer's
messages are handled in order, and what one peer has waiting is capped."""

from __future__ import annotations

import asyncio
import re
import socket

from prometheus_client import REGISTRY
from quietwire.protocols.sip.message import Message, Request, reply
from quietwire.signaling.flows import INBOX_LIMIT, DatagramListener, Flow, FlowTable

from tests.support.requests import options
from tests.support.wait import eventually

#: Requests the slow peer sends beyond those it may have waiting.
EXTRA = 3


def dropped() -> float:
    return REGISTRY.get_sample_value("quietwire_sip_udp_dropped_total") or 0.0


async def test_a_waiting_peer_holds_up_no_other_and_its_backlog_is_capped() -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    async def answer(flow: Flow, message: Message) -> None:
        assert isinstance(message, Request)
        if message.call_id == "slow":
            started.set()
            await gate.wait()
        flow.send_message(reply(message, 200, "OK"))

    listener = DatagramListener(FlowTable("r1"), answer, idle=30.0, held=60.0)
    port = await listener.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    slow, fast = socket.socket(type=socket.SOCK_DGRAM), socket.socket(type=socket.SOCK_DGRAM)
    for peer in (slow, fast):
        peer.setblocking(False)
        peer.connect(("127.0.0.1", port))

    async def answers(peer: socket.socket, count: int) -> list[int]:
        cseqs: list[int] = []
        while len(cseqs) < count:
            data = await asyncio.wait_for(loop.sock_recv(peer, 65536), 10)
            cseqs += [int(n) for n in re.findall(rb"CSeq: (\d+) OPTIONS", data)]
        return cseqs

    try:
        before = dropped()
        slow.send(options("slow", 1, "UDP"))
        await asyncio.wait_for(started.wait(), 10)
        # The slow peer's request waits; another peer is answered meanwhile.
        fast.send(options("fast", 1, "UDP"))
        assert await answers(fast, 1) == [1]
        # The slow peer's next requests wait behind its first, up to the cap.
        for cseq in range(2, 2 + INBOX_LIMIT + EXTRA):
            slow.send(options("slow", cseq, "UDP"))

        async def extra_dropped() -> bool:
            return dropped() - before == EXTRA

        await eventually(extra_dropped, 10, "the requests past the cap dropped and counted")
        gate.set()
        assert await answers(slow, 1 + INBOX_LIMIT) == list(range(1, 2 + INBOX_LIMIT))
    finally:
        slow.close()
        fast.close()
        await listener.close()
