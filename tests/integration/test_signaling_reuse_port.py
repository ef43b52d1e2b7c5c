"""QW_SIP_REUSE_PORT: signaling replicas on one host share the SIP port
(SO_REUSEPORT), and the kernel spreads new connections between them."""

from __future__ import annotations

import asyncio

import pytest
from quietwire.protocols.sip.message import Message
from quietwire.signaling.flows import Flow, FlowTable, StreamListener
from quietwire.signaling.settings import SignalingSettings

from tests.support.wait import eventually

OPTIONS = (
    b"OPTIONS sip:example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKr\r\n"
    b"From: <sip:a@example.org>;tag=1\r\nTo: <sip:example.org>\r\nCall-ID: r\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def listener(replica: str, seen: list[str], reuse_port: bool) -> StreamListener:
    async def handler(flow: Flow, message: Message) -> None:
        seen.append(replica)

    return StreamListener(FlowTable(replica), handler, None, reuse_port=reuse_port)


async def test_two_replicas_share_one_port_and_both_serve() -> None:
    seen: list[str] = []
    first, second = listener("r1", seen, True), listener("r2", seen, True)
    port = await first.start("127.0.0.1", 0)
    assert await second.start("127.0.0.1", port) == port
    writers = []
    try:
        for _ in range(40):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(OPTIONS)
            writers.append(writer)

        async def all_answered() -> bool:
            return len(seen) == 40

        await eventually(all_answered, 20.0, "every connection's OPTIONS handled")
        assert set(seen) == {"r1", "r2"}
    finally:
        for writer in writers:
            writer.close()
        await first.close()
        await second.close()


async def test_without_the_setting_the_port_is_ours_alone() -> None:
    assert SignalingSettings.model_fields["sip_reuse_port"].default is False
    first, second = listener("r1", [], False), listener("r2", [], False)
    port = await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use"):
            await second.start("127.0.0.1", port)
    finally:
        await first.close()
        await second.close()
