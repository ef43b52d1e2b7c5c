"""INVITEs without SDP (RFC 3261 section 14.1, RFC 3264): the offer comes in the 2xx
and the answer in the ACK. Both go through keyagreement like any offer and answer
(policy, downgrade refusal, SDP rewritten toward the relay), against `quietwire up`.

A 2xx whose offer is refused cannot be taken back from the phone that sent it, and
an ACK cannot be refused at all: either way the platform ends the call, a BYE with
a Reason to each phone (what RFC 3261 section 13.2.2.4 has a UAC do with an offer
it cannot accept), and the refused SDP reaches no one.
"""

from __future__ import annotations

import asyncio

from quietwire.phone.useragent import Dialog, Exchange, UserAgent
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.message import Message, Request

from tests.conftest import Platform, agent
from tests.integration.signaling_harness import establish, next_request
from tests.interop.test_relay_calls import sdes_sdp, sdp
from tests.security.test_signaling_dialogs import delivered_next

SDP = "application/sdp"


def port_of(message: Message) -> int:
    return SessionDescription.parse(message.body).media[0].port


def with_sdp(request: Request, body: bytes) -> Request:
    request.headers.add("Content-Type", SDP)
    request.body = body
    return request


async def call(alice: UserAgent, bob: UserAgent) -> tuple[Dialog, Dialog, int, int]:
    """alice calls bob with ZRTP offer and answer: both dialogs and the relay ports
    facing alice and bob."""
    assert (await bob.register()).status == 200
    invite = alice.build(
        "INVITE", "sip:bob@127.0.0.1", body=sdp("alice", 40000, True), content_type=SDP
    )
    seen: list[Message] = []
    caller, callee = await establish(alice, bob, invite, sdp("bob", 40002, True), seen)
    toward_bob, toward_alice = (port_of(m) for m in seen)
    assert 40000 not in (toward_bob, toward_alice) and 40002 not in (toward_bob, toward_alice)
    return caller, callee, toward_alice, toward_bob


async def reinvite_answered(
    alice: UserAgent, bob: UserAgent, caller: Dialog, offer: bytes
) -> tuple[Request, Exchange]:
    """alice re-INVITEs without SDP and bob's 200 carries ``offer``: the re-INVITE
    and what came back to alice."""
    reinvite = alice.in_dialog(caller, "INVITE")
    sending = asyncio.create_task(alice.send(reinvite))
    incoming = await next_request(bob, "INVITE")
    assert not incoming.body
    await bob.connection.send(bob.answer(incoming, 200, "OK", body=offer))
    return reinvite, await sending


async def both_hung_up(alice: UserAgent, bob: UserAgent, why: str) -> None:
    """The platform's BYE reaches each phone, with ``why`` in its Reason."""
    for ua in (alice, bob):
        bye = await next_request(ua, "BYE")
        assert why in (bye.headers.get("Reason") or ""), bye.headers.get("Reason")
        await ua.connection.send(ua.answer(bye, 200, "OK"))


def nothing_more(ua: UserAgent, method: str) -> bool:
    """No ``method`` request waits for ``ua`` (what was queued before is read)."""
    waiting = []
    while not ua.requests.empty():
        waiting.append(ua.requests.get_nowait().method)
    return method not in waiting


async def test_offer_in_a_reinvite_2xx_and_answer_in_the_ack_are_planned(
    platform: Platform,
) -> None:
    """bob's offer (from a new port) reaches alice pointing at the relay leg facing
    her, and her answer in the ACK reaches bob pointing at the leg facing him."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        caller, _, toward_alice, toward_bob = await call(alice, bob)
        reinvite, exchange = await reinvite_answered(alice, bob, caller, sdp("bob", 40010, True))
        assert exchange.final is not None and exchange.final.status == 200
        assert port_of(exchange.final) == toward_alice
        ack = alice.in_dialog(caller, "ACK", cseq=reinvite.cseq.number)
        await alice.connection.send(with_sdp(ack, sdp("alice", 40012, True)))
        assert port_of(await next_request(bob, "ACK")) == toward_bob
        await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))
    finally:
        await alice.close()
        await bob.close()


async def test_a_downgrading_offer_in_a_2xx_ends_the_call(platform: Platform) -> None:
    """bob's 200 offers SDES-SRTP in a ZRTP call (a mode policy takes, but weaker):
    alice never sees it (488 with the reason instead) and the platform hangs up
    both phones."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        caller, *_ = await call(alice, bob)
        _, exchange = await reinvite_answered(alice, bob, caller, sdes_sdp("bob", 40010))
        assert exchange.final is not None and exchange.final.status == 488
        assert "weaken" in (exchange.final.headers.get("Warning") or "")
        await both_hung_up(alice, bob, "weaken")
    finally:
        await alice.close()
        await bob.close()


async def test_a_downgrading_answer_in_the_ack_ends_the_call(platform: Platform) -> None:
    """alice answers bob's ZRTP offer (in the 200) with plain RTP in her ACK: the
    ACK never reaches bob with it; the platform hangs up both phones."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        caller, *_ = await call(alice, bob)
        reinvite, exchange = await reinvite_answered(alice, bob, caller, sdp("bob", 40010, True))
        assert exchange.final is not None and exchange.final.status == 200
        ack = alice.in_dialog(caller, "ACK", cseq=reinvite.cseq.number)
        await alice.connection.send(with_sdp(ack, sdp("alice", 40012, False)))
        await both_hung_up(alice, bob, "plain RTP")
        assert nothing_more(bob, "ACK")
    finally:
        await alice.close()
        await bob.close()


async def test_an_initial_invite_without_sdp_is_planned(platform: Platform) -> None:
    """A call set up with the offer in bob's 200 and the answer in alice's ACK gets
    relay legs like any other; a plain-RTP offer in the 200 gets alice a 488 and
    bob an ACK and a BYE."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        assert (await bob.register()).status == 200
        seen: list[Message] = []
        invite = alice.build("INVITE", "sip:bob@127.0.0.1")
        caller, _ = await establish(alice, bob, invite, sdp("bob", 40002, True), seen)
        toward_alice = port_of(seen[1])
        assert toward_alice != 40002
        ack = alice.in_dialog(caller, "ACK", cseq=invite.cseq.number)
        await alice.connection.send(with_sdp(ack, sdp("alice", 40000, True)))
        assert port_of(await next_request(bob, "ACK")) not in (40000, 0)
        await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))

        invite = alice.build("INVITE", "sip:bob@127.0.0.1")
        sending = asyncio.create_task(alice.send(invite))
        incoming = await next_request(bob, "INVITE")
        await bob.connection.send(bob.answer(incoming, 200, "OK", body=sdp("bob", 40002, False)))
        refused = await sending
        assert refused.final is not None and refused.final.status == 488
        await next_request(bob, "ACK")
        bye = await next_request(bob, "BYE")
        await bob.connection.send(bob.answer(bye, 200, "OK"))
    finally:
        await alice.close()
        await bob.close()
