"""A stream peer that sends and does not read (real sockets, the real listener):
what it makes us hold is bounded, what fits is delivered in order once it reads."""

from __future__ import annotations

import asyncio
import re
import socket

from prometheus_client import REGISTRY
from quietwire.protocols.sip.message import Message, Request, reply
from quietwire.signaling.flows import SEND_QUEUE_LIMIT, Flow, FlowTable, StreamListener

from tests.support.wait import eventually

REQUESTS = 2000


def options(cseq: int) -> bytes:
    return (
        f"OPTIONS sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-{cseq}\r\n"
        f"From: <sip:a@example.com>;tag=a\r\nTo: <sip:example.com>\r\n"
        f"Call-ID: backpressure\r\nCSeq: {cseq} OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def queue_full() -> float:
    return REGISTRY.get_sample_value("quietwire_sip_send_queue_full_total") or 0.0


async def test_a_peer_that_does_not_read_holds_a_bounded_backlog() -> None:
    flows: list[Flow] = []

    async def answer(flow: Flow, message: Message) -> None:
        if not flows:
            flows.append(flow)  # our side's buffer small, so that it fills
            flow.wire.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
        assert isinstance(message, Request)
        flow.send_message(reply(message, 200, "OK"))

    listener = StreamListener(FlowTable("r1"), answer, None)
    port = await listener.start("127.0.0.1", 0)
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    await asyncio.get_running_loop().sock_connect(peer, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=peer)
    dropped_before = queue_full()
    try:
        writer.write(b"".join(options(n) for n in range(1, REQUESTS + 1)))
        await writer.drain()  # every request is read: the server goes on reading

        async def backlog_full() -> bool:
            return bool(flows) and len(flows[0].backlog) == SEND_QUEUE_LIMIT and flows[0].paused

        await eventually(backlog_full, 20, "the backlog at its cap, writing paused")

        async def dropped() -> bool:
            return queue_full() > dropped_before

        await eventually(dropped, 20, "answers past the cap dropped and counted")
        # The peer reads now: what was kept arrives, in order, and the backlog empties.
        received = b""
        while flows[0].backlog or flows[0].paused or not received.endswith(b"\r\n\r\n"):
            received += await asyncio.wait_for(reader.read(65536), 10)
        numbers = [int(n) for n in re.findall(rb"CSeq: (\d+) OPTIONS", received)]
        assert numbers == sorted(numbers) and numbers[0] == 1
        assert SEND_QUEUE_LIMIT < len(numbers) < REQUESTS
        # And the connection still serves.
        writer.write(options(REQUESTS + 1))
        await writer.drain()
        tail = b""
        while f"CSeq: {REQUESTS + 1} OPTIONS".encode() not in tail:
            tail += await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
        await listener.close()
