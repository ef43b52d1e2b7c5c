"""Our phone takes a move (issue 15): in a secured call, the platform's MoveCall
re-INVITEs both phones toward new media addresses; each answers 200 and keeps
its ZRTP/SRTP session, now sending to the new address, and the other phone
still decrypts every packet. The new addresses are a forwarder in this test
(the phones are under test, not a relay: tests/support/forwarder.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as redis
from quietwire.embedded.pki import Pki
from quietwire.phone.call import Phone
from quietwire.protocols.rtp.demux import PacketKind
from quietwire.protocols.sip.message import Response
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.redisclient import text

from tests.integration.signaling_harness import DOMAIN, Replica, phone
from tests.integration.test_phone import options
from tests.support.forwarder import forwarder
from tests.support.moves import SDP, offer
from tests.support.wait import eventually, until

#: Packets each way through the new path before the call may end (0.6 s of audio).
PACKETS = 30


async def the_call_id(redis_url: str) -> str:
    client = redis.from_url(redis_url)
    try:
        found = [text(k) for k in await client.keys("qw:dialog:*")]
        keys = [k for k in found if not k.endswith(":legs")]
    finally:
        await client.aclose()
    assert len(keys) == 1, keys
    return keys[0].split("{", 1)[1].rstrip("}")


async def test_our_phones_move_to_new_addresses_and_keep_their_srtp_session(
    pki: Pki, one: Replica, redis_url: str, tmp_path: Path
) -> None:
    lines: list[str] = []
    hang_up = asyncio.Event()

    async def keys() -> AsyncIterator[str]:
        await hang_up.wait()
        yield "h"

    alice = Phone(
        options(pki, one.port, "alice", tmp_path, 440, duration=30.0, keys=keys()), lines.append
    )
    bob = Phone(options(pki, one.port, "bob", tmp_path, 880, duration=30.0), lines.append)
    await alice.start()
    await bob.start()
    try:
        answering = asyncio.create_task(bob.answer(timeout=10))
        calling = asyncio.create_task(alice.call(f"sip:bob@{DOMAIN}"))
        await until(lambda: sum(line.startswith("SAS ") for line in lines) == 2, 20, "both SAS")
        call_id = await the_call_id(redis_url)
        async with forwarder() as relay:
            media = relay.plan()
            target = f"127.0.0.1:{one.service.settings.grpc_port}"
            async with open_channel(target, None) as channel:
                result = await signaling_pb2_grpc.SignalingStub(channel).MoveCall(
                    signaling_pb2.MoveCallRequest(call_id=call_id, media=media), timeout=20
                )
            assert result.outcome == signaling_pb2.MoveCallResponse.OUTCOME_MOVED, result
            # Each phone's answer, parsed: the same ZRTP session (its own zrtp-hash).
            hashes = {m.zrtp_hash for m in (*result.caller_media, *result.callee_media)}
            assert len(hashes) == 2 and all(h.startswith("1.10 ") for h in hashes)
            assert f"media moved to 127.0.0.1:{relay.sides[0].port}" in lines
            assert f"media moved to 127.0.0.1:{relay.sides[1].port}" in lines

            async def both_ways() -> bool:
                return all(relay.forwarded(side) >= PACKETS for side in ("caller", "callee"))

            await eventually(both_ways, 10, lambda: f"SRTP both ways: {relay.counts}")
            # Nothing new to agree: no ZRTP on the new path, only the session's SRTP.
            assert not any(kind is PacketKind.ZRTP for _, kind in relay.counts)
            forwarded = relay.counts.copy()  # what reached the phones before the hang-up
            hang_up.set()
            caller, callee = await calling, await answering
    finally:
        await alice.close()
        await bob.close()
    assert caller.secured is not None and callee.secured is not None
    assert caller.stats["rejected"] == 0 and callee.stats["rejected"] == 0
    # Every packet that took the new path before the hang-up was decrypted.
    assert callee.stats["srtp_in"] >= forwarded["caller", PacketKind.RTP] >= PACKETS
    assert caller.stats["srtp_in"] >= forwarded["callee", PacketKind.RTP] >= PACKETS
    assert callee.ended_by_peer  # alice's BYE, after the move, reached bob


async def test_our_phone_refuses_a_reinvite_that_would_change_its_session(
    pki: Pki, one: Replica, tmp_path: Path
) -> None:
    """Only where to send may change: a re-INVITE with another a=zrtp-hash (another
    ZRTP peer) or no codec in common is refused 488 and changes nothing; one that
    only moves the media is answered with the same SDP as before."""
    lines: list[str] = []
    bob = Phone(options(pki, one.port, "bob", tmp_path, 880, duration=30.0), lines.append)
    await bob.start()
    alice = await phone(pki, one.port, "alice")
    answering = asyncio.create_task(bob.answer(timeout=10))
    try:
        invite = alice.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=offer("alice", 40000), content_type=SDP
        )
        exchange = await alice.send(invite)
        assert exchange.final is not None and exchange.final.status == 200
        dialog = alice.dialog_from_response(invite, exchange.final)
        await alice.connection.send(alice.in_dialog(dialog, "ACK", cseq=exchange.final.cseq.number))

        async def reinvite(body: bytes) -> Response:
            request = alice.in_dialog(dialog, "INVITE")
            request.headers.add("Content-Type", SDP)
            request.body = body
            answered = await alice.send(request)
            assert answered.final is not None
            await alice.connection.send(
                alice.in_dialog(dialog, "ACK", cseq=answered.final.cseq.number)
            )
            return answered.final

        other_peer = offer("alice", 40010).replace(b"zrtp-hash:1.10 616c", b"zrtp-hash:1.10 0000")
        assert (await reinvite(other_peer)).status == 488
        no_codec = offer("alice", 40010).replace(b" 0 8\r\n", b" 9\r\n")
        assert (await reinvite(no_codec)).status == 488
        moved = await reinvite(offer("alice", 40010))
        assert moved.status == 200
        assert moved.body == exchange.final.body  # bob's SDP: nothing of his changed
        assert "media moved to 127.0.0.1:40010" in lines
        assert sum(line.startswith("re-INVITE refused") for line in lines) == 2
    finally:
        answering.cancel()
        await alice.close()
        await bob.close()
