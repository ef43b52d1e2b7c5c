"""signaling works on a SIP message with its Call-ID as the call id of the
context, so its log lines and the RPCs it makes (x-call-id, test_chassis.py)
carry it to keyagreement and the relay."""

from __future__ import annotations

import asyncio

from quietwire.embedded.pki import Pki
from quietwire.rpc.keyagreement.v1.keyagreement_pb2 import DialogTags
from quietwire.runtime.context import call_id_var
from quietwire.signaling.media import Offer

from tests.integration.signaling_harness import DOMAIN, Replica, establish, next_request, phone

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


class WitnessPlanner:
    """Passes SDP through and notes the call id of the context it is asked in."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def offer(self, offer: Offer) -> bytes:
        self.seen.append(("offer", call_id_var.get()))
        return offer.sdp

    async def answer(
        self,
        call_id: str,
        sdp: bytes,
        from_caller: bool = False,
        *,
        tags: DialogTags,
        provisional: bool = False,
    ) -> bytes:
        self.seen.append(("answer", call_id_var.get()))
        return sdp

    async def end(self, call_id: str, tags: DialogTags) -> None:
        self.seen.append(("end", call_id_var.get()))


async def test_each_step_of_a_call_runs_under_its_call_id(pki: Pki, one: Replica) -> None:
    witness = WitnessPlanner()
    one.plan_with(witness)
    alice, bob = await phone(pki, one.port, "alice"), await phone(pki, one.port, "bob")
    try:
        assert (await bob.register()).status == 200
        invite = alice.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=SDP, content_type="application/sdp"
        )
        caller, _ = await establish(alice, bob, invite, SDP)
        hanging_up = asyncio.create_task(alice.send(alice.in_dialog(caller, "BYE")))
        bye = await next_request(bob, "BYE")
        await bob.connection.send(bob.answer(bye, 200, "OK"))
        final = (await hanging_up).final
        assert final is not None and final.status == 200
    finally:
        await alice.close()
        await bob.close()
    assert [step for step, _ in witness.seen] == ["offer", "answer", "end"]
    assert {call_id for _, call_id in witness.seen} == {invite.call_id}
