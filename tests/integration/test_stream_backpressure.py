"""A stream peer that sends and does not read (real sockets, the real listener):
what it makes us hold is bounded, what fits is delivered in order once it reads."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable

from prometheus_client import REGISTRY
from quietwire.protocols.sip.message import Message, Request, reply
from quietwire.signaling.flows import SEND_QUEUE_LIMIT, Flow, FlowTable, StreamListener

from tests.support.requests import options
from tests.support.wait import eventually

REQUESTS = 2000


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
    # A bare socket, read only when the test says so (a StreamReader would read
    # ahead into its own buffer and take the pressure off).
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(peer, ("127.0.0.1", port))
    dropped_before = queue_full()

    async def read_until(done: Callable[[bytes], bool]) -> bytes:
        received = b""
        while not done(received):
            received += await asyncio.wait_for(loop.sock_recv(peer, 65536), 10)
        return received

    try:
        # Every request is read (the listener goes on reading while it cannot write).
        await loop.sock_sendall(
            peer, b"".join(options("backpressure", n) for n in range(1, REQUESTS + 1))
        )

        async def backlog_full() -> bool:
            return bool(flows) and len(flows[0].backlog) == SEND_QUEUE_LIMIT and flows[0].paused

        await eventually(backlog_full, 20, "the backlog at its cap, writing paused")

        async def dropped() -> bool:
            return queue_full() > dropped_before

        await eventually(dropped, 20, "answers past the cap dropped and counted")
        # The peer reads now: what was kept arrives, in order, and the backlog empties.
        received = await read_until(
            lambda data: not (flows[0].backlog or flows[0].paused) and data.endswith(b"\r\n\r\n")
        )
        numbers = [int(n) for n in re.findall(rb"CSeq: (\d+) OPTIONS", received)]
        assert numbers == sorted(numbers) and numbers[0] == 1
        assert SEND_QUEUE_LIMIT < len(numbers) < REQUESTS
        # And the connection still serves.
        await loop.sock_sendall(peer, options("backpressure", REQUESTS + 1))
        await read_until(lambda data: f"CSeq: {REQUESTS + 1} OPTIONS".encode() in data)
    finally:
        peer.close()
        await listener.close()


async def test_a_request_sent_just_before_the_peer_closes_is_still_handled() -> None:
    """A phone that sends its BYE and closes at once: the BYE still goes on, even
    while the request before it is being handled when the connection ends."""
    handled = asyncio.Event()
    closed_meanwhile = asyncio.Event()

    async def note(flow: Flow, message: Message) -> None:
        if message.cseq.number == 1:
            await closed_meanwhile.wait()
        else:
            handled.set()

    table = FlowTable("r1")
    listener = StreamListener(table, note, None)

    async def no_flows() -> bool:
        flows = list(table.flows.values())
        return bool(flows) and all(flow.closed.is_set() for flow in flows)

    port = await listener.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    peer = socket.socket()
    peer.setblocking(False)
    try:
        await loop.sock_connect(peer, ("127.0.0.1", port))
        await loop.sock_sendall(peer, options("backpressure", 1) + options("backpressure", 2))
        peer.close()
        await eventually(no_flows, 10, "the connection gone")
        closed_meanwhile.set()
        await asyncio.wait_for(handled.wait(), 10)
    finally:
        peer.close()
        await listener.close()
