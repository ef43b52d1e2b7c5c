"""A connection's messages are handled by one task of the connection's, which
waits between them (real sockets, the real listener): it handles them in
order, the idle timeout still ends a silent connection, and the flow ends with it."""

from __future__ import annotations

import asyncio
import re
import socket

from quietwire.protocols.sip.message import Message, Request, reply
from quietwire.signaling.flows import Flow, FlowTable, StreamLimits, StreamListener

from tests.support.requests import options
from tests.support.wait import eventually

IDLE = 0.5


async def test_one_task_handles_a_connections_messages_and_idle_still_ends_it() -> None:
    handlers: list[asyncio.Task[object] | None] = []

    async def answer(flow: Flow, message: Message) -> None:
        assert isinstance(message, Request)
        handlers.append(asyncio.current_task())
        await asyncio.sleep(0)  # a handler that suspends, as every real one does
        flow.send_message(reply(message, 200, "OK"))

    table = FlowTable("r1")
    listener = StreamListener(table, answer, None, StreamLimits(idle=IDLE))
    port = await listener.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    peer = socket.socket()
    peer.setblocking(False)
    await loop.sock_connect(peer, ("127.0.0.1", port))

    async def answered(count: int) -> bytes:
        received = b""
        while len(re.findall(rb"SIP/2.0 200 OK", received)) < count:
            received += await asyncio.wait_for(loop.sock_recv(peer, 65536), 10)
        return received

    try:
        # One message, its answer; then two in one segment, after the worker waited.
        await loop.sock_sendall(peer, options("worker", 1))
        first = await answered(1)
        await loop.sock_sendall(peer, options("worker", 2) + options("worker", 3))
        rest = await answered(2)
        numbers = [int(n) for n in re.findall(rb"CSeq: (\d+) OPTIONS", first + rest)]
        assert numbers == [1, 2, 3]
        assert len(handlers) == 3 and len(set(map(id, handlers))) == 1
        # Silent now: the waiting worker does not count as busy, the idle timeout ends it.
        closed = await asyncio.wait_for(loop.sock_recv(peer, 65536), IDLE + 10)
        assert closed == b""

        async def flow_ended() -> bool:
            return not table.flows and not listener._tasks

        await eventually(flow_ended, 10, "the flow ended and its worker gone")
    finally:
        peer.close()
        await listener.close()
