"""A ringing call answered while keyagreement is down: the caller hears 503 with
Retry-After (RFC 3261 section 21.5.4: try again shortly), like a new INVITE in
the same outage; the callee's half call is ACKed and hung up with a Reason, and
once keyagreement is back the relay's session is freed and no ghost ``zrtp
waiting`` call is listed."""

from __future__ import annotations

import asyncio

from tests.faults.cluster import Cluster, zrtp_invite
from tests.integration.signaling_harness import next_request
from tests.interop.test_relay_calls import sdp
from tests.support.wait import eventually

SDP = "application/sdp"
#: Seconds after keyagreement's return by which nothing of the call is left.
WITHIN = 8


async def test_an_answer_while_keyagreement_is_away_gets_503_and_leaves_nothing(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        assert (await bob.register()).status == 200
        invite = zrtp_invite(alice, "bob")
        sending = asyncio.create_task(alice.send(invite))
        incoming = await next_request(bob, "INVITE")
        assert invite.call_id in await cluster.calls()

        cluster.kill("keyagreement")
        ok = bob.answer(incoming, 200, "OK", body=sdp("bob", 40002, True))
        ok.headers.set("Content-Type", SDP)
        await bob.connection.send(ok)
        final = (await sending).final
        assert final is not None
        assert (final.status, final.headers.get("Retry-After")) == (503, "5")
        ack = await next_request(bob, "ACK")
        bye = await next_request(bob, "BYE")
        assert ack.call_id == bye.call_id == invite.call_id
        assert bye.headers.get("Reason")
        await bob.connection.send(bob.answer(bye, 200, "OK"))
        retried = (await alice.send(zrtp_invite(alice, "bob", 40010))).final
        assert retried is not None, "an INVITE in the same outage: 503 too"
        assert (retried.status, retried.headers.get("Retry-After")) == (503, "5")

        await cluster.start("keyagreement")

        async def nothing_left() -> bool:
            return invite.call_id not in await cluster.calls() and not (
                await cluster.relay_sessions()
            )

        await eventually(nothing_left, WITHIN, "the refused call's record and relay session gone")
    finally:
        await alice.close()
        await bob.close()
