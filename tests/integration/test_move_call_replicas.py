"""Any signaling replica can move a call: alice's flow is on one replica, bob's on
another; MoveCall asked of bob's replica writes alice's re-INVITE through alice's
replica, and her answer (our Via names the asking replica) is handed back to it."""

from __future__ import annotations

import asyncio

from quietwire.embedded.pki import Pki
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as ka
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel

from tests.integration.signaling_harness import DOMAIN, add_users, establish, phone, replica
from tests.support.moves import SDP, offer, take_move

RELAY_B = ka.RelayEndpoint(host="192.0.2.50", rtp_port=50000, rtcp_port=50001)


async def test_a_move_asked_of_one_replica_reaches_a_phone_on_another(
    pki: Pki, redis_url: str
) -> None:
    await add_users(redis_url)
    async with replica(pki, redis_url) as first, replica(pki, redis_url) as second:
        alice, bob = await phone(pki, first.port, "alice"), await phone(pki, second.port, "bob")
        try:
            for ua in (alice, bob):
                assert (await ua.register()).status == 200
            invite = alice.build(
                "INVITE", f"sip:bob@{DOMAIN}", body=offer("alice", 40000), content_type=SDP
            )
            await establish(alice, bob, invite, offer("bob", 40002))
            media = [ka.MediaPlan(toward_caller=RELAY_B, toward_callee=RELAY_B)]
            target = f"127.0.0.1:{second.service.settings.grpc_port}"
            async with open_channel(target, None) as channel:
                moving = asyncio.ensure_future(
                    signaling_pb2_grpc.SignalingStub(channel).MoveCall(
                        signaling_pb2.MoveCallRequest(call_id=invite.call_id, media=media),
                        timeout=20,
                    )
                )
                (to_alice, _), (to_bob, _) = await asyncio.gather(
                    take_move(alice, offer("alice", 40010)), take_move(bob, offer("bob", 40012))
                )
                result = await moving
        finally:
            await alice.close()
            await bob.close()
    assert result.outcome == signaling_pb2.MoveCallResponse.OUTCOME_MOVED, result
    assert b"m=audio 50000 " in to_alice.body and b"m=audio 50000 " in to_bob.body
    assert to_alice.vias[0].params["qwr"] == second.service.replica
