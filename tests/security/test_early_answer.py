"""SDP that does not come in an INVITE's 2xx (RFC 3262, 3311, 3959, 3960), against
`quietwire up` (TLS signaling, keyagreement, relay, Redis): an early answer in a
183, offers in a PRACK or an UPDATE of an early dialog, and their answers are
planned like the 2xx's. None reaches the other phone with the sender's address:
each points at the relay, goes through policy (a=zrtp-hash, downgrades), and a
refused one reaches no one.
"""

from __future__ import annotations

import asyncio

import pytest
from quietwire.phone.useragent import Dialog, Exchange, UserAgent
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.message import Message, Request, Response

from tests.conftest import Platform, agent
from tests.integration.signaling_harness import next_request
from tests.interop.test_relay_calls import relay_calls_reach, sdes_sdp, sdp
from tests.security.test_delayed_offer import nothing_more, port_of, with_sdp
from tests.security.test_relay_attacks import Phone, rtp
from tests.support.wait import eventually, until

#: Where bob's phones are, as their SDP says: an address no other phone may learn.
BOB_HOST, OTHER_BOB_HOST = "127.0.0.5", "127.0.0.6"


def at(host: str, body: bytes) -> bytes:
    """``body`` (an SDP of :func:`sdp`) naming ``host`` as the phone's address."""
    return body.replace(b"127.0.0.1", host.encode())


def bob_sdp(port: int, host: str = BOB_HOST, zrtp: bool = True) -> bytes:
    return at(host, sdp("bob", port, zrtp))


def hidden(message: Message, *hosts: str) -> bool:
    """``message`` names none of ``hosts`` (in its SDP or anywhere else)."""
    return not any(host.encode() in message.serialize() for host in hosts)


def respond(
    ua: UserAgent, request: Request, status: int, reason: str, body: bytes, like: Response | None
) -> Response:
    """``ua``'s response to an INVITE, in the early dialog of ``like`` (its To tag) if given."""
    response = ua.answer(request, status, reason, body=body)
    response.headers.set("Record-Route", ", ".join(request.headers.get_all("Record-Route")))
    if like is not None:
        response.headers.set("To", like.headers.get("To") or "")
    return response


async def progress(ua: UserAgent, call_id: str, count: int = 1) -> list[Response]:
    """The first ``count`` 18x with SDP that ``ua``'s INVITE on ``call_id`` got."""

    def got() -> list[Response]:
        early = [
            r
            for exchange, _ in ua._pending.values()
            for r in exchange.provisional
            if r.call_id == call_id and r.status in (180, 183) and r.body
        ]
        return early if len(early) >= count else []

    return (await until(got, 10, f"{count} early answer(s) reach the caller"))[:count]


async def ringing(
    alice: UserAgent, *bobs: UserAgent, offer: bytes
) -> tuple[Request, asyncio.Task[Exchange], list[Request]]:
    """alice INVITEs bob (every registered phone of his): her INVITE, her sending
    of it, and the INVITE each phone got."""
    for bob in bobs:
        assert (await bob.register()).status == 200
    content_type = "application/sdp" if offer else None
    invite = alice.build("INVITE", "sip:bob@127.0.0.1", body=offer, content_type=content_type)
    sending = asyncio.create_task(alice.send(invite))
    incoming = [await next_request(bob, "INVITE") for bob in bobs]
    return invite, sending, incoming


async def acked(alice: UserAgent, bob: UserAgent, invite: Request, ok: Response) -> Dialog:
    """alice ACKs the 200 bob's phone sent her INVITE; her dialog."""
    dialog = alice.dialog_from_response(invite, ok)
    await alice.connection.send(alice.in_dialog(dialog, "ACK", cseq=ok.cseq.number))
    await next_request(bob, "ACK")
    return dialog


async def hang_up(alice: UserAgent, bob: UserAgent, dialog: Dialog) -> None:
    """alice's BYE reaches bob's phone and his 200 reaches her."""
    bye = asyncio.create_task(alice.send(alice.in_dialog(dialog, "BYE")))
    await bob.connection.send(bob.answer(await next_request(bob, "BYE"), 200, "OK"))
    ended = await bye
    assert ended.final is not None and ended.final.status == 200


def media_of(message: Message) -> tuple[str, int]:
    """The address and port an SDP's first stream points at."""
    session = SessionDescription.parse(message.body)
    connection = session.media_connection(session.media[0])
    assert connection is not None
    return connection.address, session.media[0].port


@pytest.mark.parametrize("in_2xx", ["same", "changed", "none"])
async def test_an_early_answer_reaches_the_caller_pointing_at_the_relay(
    platform: Platform, in_2xx: str
) -> None:
    """bob answers in a 183 (early media) and then in his 200 with the same SDP, a
    different one (planned anew, RFC 6337 section 3.1) or none: the 183 alice gets
    points at the relay leg facing her, like her 200, and bob's address is nowhere
    in what she receives."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        invite, sending, [incoming] = await ringing(alice, bob, offer=sdp("alice", 40000, True))
        toward_bob = port_of(incoming)
        early = respond(bob, incoming, 183, "Session Progress", bob_sdp(40002), None)
        await bob.connection.send(early)
        [got] = await progress(alice, invite.call_id)
        toward_alice = port_of(got)
        assert toward_alice not in (40000, 40002, toward_bob)
        assert hidden(got, BOB_HOST)

        body = {"same": bob_sdp(40002), "changed": bob_sdp(40008), "none": b""}[in_2xx]
        await bob.connection.send(respond(bob, incoming, 200, "OK", body, early))
        exchange = await sending
        assert isinstance(exchange.final, Response) and exchange.final.status == 200
        assert hidden(exchange.final, BOB_HOST)
        if body:
            assert port_of(exchange.final) == toward_alice
        else:
            assert not exchange.final.body
        await hang_up(alice, bob, await acked(alice, bob, invite, exchange.final))
    finally:
        await alice.close()
        await bob.close()
    await relay_calls_reach(platform, 0)


@pytest.mark.parametrize(
    ("policy", "answer", "warning"),
    [
        ("default", bob_sdp(40002, zrtp=False), "plain RTP refused"),
        ("e2e_only", at(BOB_HOST, sdes_sdp("bob", 40002)), "SDES"),
    ],
)
async def test_a_refused_early_answer_cancels_the_callee(
    platform: Platform, policy: str, answer: bytes, warning: str
) -> None:
    """bob's 183 drops ZRTP (plain RTP; or SDES while his policy asks for end-to-end
    media): refused as his 2xx would be. alice never gets that SDP: her INVITE ends
    with 488 and the Warning; bob's phone is CANCELled; the relay session is freed."""
    assert platform.quietwire("user", "policy", "bob", policy).returncode == 0
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        _, sending, [incoming] = await ringing(alice, bob, offer=sdp("alice", 40000, True))
        await bob.connection.send(respond(bob, incoming, 183, "Session Progress", answer, None))
        cancel = await next_request(bob, "CANCEL")
        assert cancel.call_id == incoming.call_id
        await bob.connection.send(bob.answer(cancel, 200, "OK"))
        await bob.connection.send(bob.answer(incoming, 487, "Request Terminated"))
        exchange = await sending
        assert isinstance(exchange.final, Response) and exchange.final.status == 488
        assert warning in (exchange.final.headers.get("Warning") or "")
        assert not any(r.body for r in exchange.provisional)
        assert all(hidden(r, BOB_HOST) for r in [*exchange.provisional, exchange.final])
    finally:
        assert platform.quietwire("user", "policy", "bob", "default").returncode == 0
        await alice.close()
        await bob.close()
    await relay_calls_reach(platform, 0)


async def test_offers_in_the_prack_and_update_of_an_early_dialog_are_planned(
    platform: Platform,
) -> None:
    """bob answers in a reliable 183 (RFC 3262); alice's PRACK and then her UPDATE
    (RFC 3311) offer new media in that early dialog, and so does bob's UPDATE: each
    offer and each answer reaches the other phone pointing at the relay; an UPDATE that would weaken
    ZRTP to SDES gets 488 and never reaches bob. bob's 200 without SDP confirms
    the early dialog, and the call ends normally."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        invite, sending, [incoming] = await ringing(alice, bob, offer=sdp("alice", 40000, True))
        toward_bob = port_of(incoming)
        early = respond(bob, incoming, 183, "Session Progress", bob_sdp(40002), None)
        early.headers.add("Require", "100rel")
        early.headers.add("RSeq", "1")
        await bob.connection.send(early)
        [got] = await progress(alice, invite.call_id)
        toward_alice = port_of(got)
        dialog = alice.dialog_from_response(invite, got)

        for method, alice_port, bob_port in (("PRACK", 40004, 40006), ("UPDATE", 40010, 40012)):
            offer = with_sdp(alice.in_dialog(dialog, method), sdp("alice", alice_port, True))
            if method == "PRACK":
                offer.headers.add("RAck", f"1 {got.cseq.number} INVITE")
            asking = asyncio.create_task(alice.send(offer))
            offered = await next_request(bob, method)
            assert port_of(offered) == toward_bob, method
            await bob.connection.send(bob.answer(offered, 200, "OK", body=bob_sdp(bob_port)))
            answered = await asking
            assert isinstance(answered.final, Response) and answered.final.status == 200
            assert port_of(answered.final) == toward_alice and hidden(answered.final, BOB_HOST)

        # bob's own UPDATE in the early dialog (on his flow: the token tells he is
        # the callee) reaches alice pointing at the relay, and her answer too.
        bob_dialog = bob.dialog_from_request(incoming, early)
        update = with_sdp(bob.in_dialog(bob_dialog, "UPDATE"), bob_sdp(40016))
        asking = asyncio.create_task(bob.send(update))
        offered = await next_request(alice, "UPDATE")
        assert port_of(offered) == toward_alice and hidden(offered, BOB_HOST)
        await alice.connection.send(
            alice.answer(offered, 200, "OK", body=sdp("alice", 40018, True))
        )
        answered = await asking
        assert isinstance(answered.final, Response) and port_of(answered.final) == toward_bob

        weaker = with_sdp(alice.in_dialog(dialog, "UPDATE"), sdes_sdp("alice", 40014))
        refused = await alice.send(weaker)
        assert isinstance(refused.final, Response) and refused.final.status == 488
        assert "weaken" in (refused.final.headers.get("Warning") or "")

        await bob.connection.send(respond(bob, incoming, 200, "OK", b"", early))
        exchange = await sending
        assert isinstance(exchange.final, Response) and exchange.final.status == 200
        assert nothing_more(bob, "UPDATE")
        await hang_up(alice, bob, await acked(alice, bob, invite, exchange.final))
    finally:
        await alice.close()
        await bob.close()
    await relay_calls_reach(platform, 0)


async def test_forked_early_answers_the_2xx_wins_the_media(platform: Platform) -> None:
    """alice's INVITE forks to bob's two phones; both answer in a 183 with SDP
    (early media). alice gets both pointing at the relay, neither phone's address;
    the phone whose early media the relay did not follow last answers 200 and
    wins: the other is CANCELled, and real RTP shows the relay's leg follows the
    winner, not the phone it followed while ringing."""
    alice_media, first_media, second_media = Phone(), Phone(BOB_HOST), Phone(OTHER_BOB_HOST)
    alice = await agent(platform, "alice")
    bobs = [await agent(platform, "bob"), await agent(platform, "bob")]
    try:
        offer = sdp("alice", alice_media.address.port, True)
        invite, sending, incoming = await ringing(alice, *bobs, offer=offer)
        early = [
            respond(bob, got, 183, "Session Progress", bob_sdp(media.address.port, host), None)
            for bob, got, media, host in zip(
                bobs,
                incoming,
                (first_media, second_media),
                (BOB_HOST, OTHER_BOB_HOST),
                strict=True,
            )
        ]
        # The second phone answers early first, then the first phone (whose early
        # media the relay follows then); the second phone's 200 takes it over.
        for count, index in enumerate((1, 0), start=1):
            await bobs[index].connection.send(early[index])
            got = await progress(alice, invite.call_id, count)
        assert len({port_of(r) for r in got}) == 1
        assert all(hidden(r, BOB_HOST, OTHER_BOB_HOST) for r in got)

        winner = respond(bobs[1], incoming[1], 200, "OK", early[1].body, early[1])
        await bobs[1].connection.send(winner)
        cancel = await next_request(bobs[0], "CANCEL")
        await bobs[0].connection.send(bobs[0].answer(cancel, 200, "OK"))
        await bobs[0].connection.send(bobs[0].answer(incoming[0], 487, "Request Terminated"))
        exchange = await sending
        assert isinstance(exchange.final, Response) and exchange.final.status == 200
        relay_host, toward_alice = media_of(exchange.final)
        assert hidden(exchange.final, BOB_HOST, OTHER_BOB_HOST)
        dialog = await acked(alice, bobs[1], invite, exchange.final)

        toward_bob = port_of(incoming[1])
        assert relay_host == "127.0.0.1"

        async def heard() -> bytes | None:
            """What reaches alice once her leg latched (on her SDP address) and
            each of bob's phones sent: the losing one first."""
            alice_media.send(rtp(1), toward_alice)
            first_media.send(rtp(2), toward_bob)
            second_media.send(rtp(3), toward_bob)
            return await alice_media.receive(0.2)

        assert await eventually(heard, 5, "bob's RTP through the relay") == rtp(3)
        await hang_up(alice, bobs[1], dialog)
    finally:
        await alice.close()
        for bob in bobs:
            await bob.close()
        for media in (alice_media, first_media, second_media):
            media.sock.close()
    await relay_calls_reach(platform, 0)


@pytest.mark.parametrize("answer_zrtp", [True, False])
async def test_an_offer_in_a_reliable_183_and_its_answer_in_the_prack_are_planned(
    platform: Platform, answer_zrtp: bool
) -> None:
    """alice INVITEs without SDP and bob offers in a reliable 183 (RFC 3262 section
    5): the offer reaches alice pointing at the relay; her answer in the PRACK
    reaches bob pointing at it too. A plain-RTP answer in the PRACK is refused
    (488 with the reason) and the ringing call ends: bob's phone is CANCELled,
    alice's INVITE gets 488, and the SDP reaches no one."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        invite, sending, [incoming] = await ringing(alice, bob, offer=b"")
        early = respond(bob, incoming, 183, "Session Progress", bob_sdp(40002), None)
        early.headers.add("Require", "100rel")
        early.headers.add("RSeq", "1")
        await bob.connection.send(early)
        [got] = await progress(alice, invite.call_id)
        assert port_of(got) != 40002 and hidden(got, BOB_HOST)

        dialog = alice.dialog_from_response(invite, got)
        prack = with_sdp(alice.in_dialog(dialog, "PRACK"), sdp("alice", 40004, answer_zrtp))
        prack.headers.add("RAck", f"1 {got.cseq.number} INVITE")
        if not answer_zrtp:
            refused = await alice.send(prack)
            assert isinstance(refused.final, Response) and refused.final.status == 488
            assert "plain RTP" in (refused.final.headers.get("Warning") or "")
            cancel = await next_request(bob, "CANCEL")
            await bob.connection.send(bob.answer(cancel, 200, "OK"))
            await bob.connection.send(bob.answer(incoming, 487, "Request Terminated"))
            exchange = await sending
            assert isinstance(exchange.final, Response) and exchange.final.status == 488
            assert nothing_more(bob, "PRACK")
            return
        acking = asyncio.create_task(alice.send(prack))
        answered = await next_request(bob, "PRACK")
        assert port_of(answered) not in (40002, 40004)
        await bob.connection.send(bob.answer(answered, 200, "OK"))
        assert (await acking).final is not None

        await bob.connection.send(respond(bob, incoming, 200, "OK", b"", early))
        exchange = await sending
        assert isinstance(exchange.final, Response) and exchange.final.status == 200
        await hang_up(alice, bob, await acked(alice, bob, invite, exchange.final))
    finally:
        await alice.close()
        await bob.close()
    await relay_calls_reach(platform, 0)
