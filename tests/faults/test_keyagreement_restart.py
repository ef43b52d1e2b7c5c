"""keyagreement killed mid-call and restarted where signaling expects it: the
established call goes on and ends cleanly, and a new call is planned at once."""

from __future__ import annotations

import asyncio

from tests.faults.cluster import DOMAIN, Cluster
from tests.integration.signaling_harness import establish, next_request
from tests.interop.test_relay_calls import sdp
from tests.support.wait import wait_until

SDP = "application/sdp"


async def test_a_call_outlives_keyagreement(cluster: Cluster) -> None:
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        assert (await bob.register()).status == 200
        invite = alice.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", 40000, True), content_type=SDP
        )
        caller, _ = await establish(alice, bob, invite, sdp("bob", 40002, True))
        assert invite.call_id in cluster.quietwire("calls").stdout

        await cluster.restart("keyagreement")

        hanging_up = asyncio.create_task(alice.send(alice.in_dialog(caller, "BYE")))
        await bob.connection.send(bob.answer(await next_request(bob, "BYE"), 200, "OK"))
        final = (await hanging_up).final
        assert final is not None and final.status == 200
        wait_until(
            lambda: invite.call_id not in cluster.quietwire("calls").stdout,
            15,
            "the ended call gone from `quietwire calls`",
        )
        again = alice.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", 40010, True), content_type=SDP
        )
        await establish(alice, bob, again, sdp("bob", 40012, True))
    finally:
        await alice.close()
        await bob.close()
