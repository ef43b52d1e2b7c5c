"""A phone behind NAT proves itself to the relay with ICE (issue 12, finding 2's gap):
its SDP's ICE credentials travel signaling → keyagreement → relay, and the SDP the
other phone gets names only the relay. Against `quietwire up`: real TLS, gRPC, UDP.

Which key proves which check (RFC 8445 section 7.2.2): bob's phone checks the
relay leg facing it (the candidate in the offer it received) with USERNAME
``<alice's ufrag>:<bob's ufrag>`` and MESSAGE-INTEGRITY keyed with alice's
ice-pwd, which reaches bob unchanged in the rewritten offer. A check keyed with
any other password, bob's own included, proves nothing.
"""

from __future__ import annotations

from quietwire.protocols.rtp.stun import IceCredentials
from quietwire.protocols.sdp import ice
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.message import Message

from tests.conftest import Platform, agent
from tests.integration.signaling_harness import establish
from tests.interop.test_relay_calls import sdp
from tests.security.test_relay_attacks import Phone, ice_check, rtp
from tests.security.test_signaling_dialogs import delivered_next

ALICE = ("AliceUfrag", "AliceIcePassword0123456789")
BOB = ("BobUfrag", "BobIcePassword0123456789+/")


def ice_sdp(user: str, phone: Phone, credentials: tuple[str, str]) -> bytes:
    """An ICE phone's SDP: ZRTP, rtcp-mux, its credentials and host candidate."""
    port = phone.address.port
    lines = [
        "a=rtcp-mux",
        f"a=ice-ufrag:{credentials[0]}",
        f"a=ice-pwd:{credentials[1]}",
        f"a=candidate:1 1 UDP 2130706431 127.0.0.1 {port} typ host",
    ]
    return sdp(user, port, True) + ("\r\n".join(lines) + "\r\n").encode()


def relay_port(message: Message, credentials: tuple[str, str]) -> int:
    """The relay leg the SDP in ``message`` names: its one candidate, at the m= port;
    the other phone's credentials are there unchanged."""
    sdp = SessionDescription.parse(message.body)
    media = sdp.media[0]
    (candidate,) = media.attributes("candidate")
    assert candidate is not None and candidate.split()[4:6] == ["127.0.0.1", str(media.port)]
    assert ice.credentials(sdp, media) == IceCredentials(*credentials)
    return media.port


async def reaches(sender: Phone, port: int, receiver: Phone, attempts: int = 40) -> bool:
    """Whether RTP ``sender`` sends to relay ``port`` comes out at ``receiver``."""
    for n in range(1, attempts + 1):
        sender.send(rtp(n), port)
        if await receiver.receive(0.1) is not None:
            return True
    return False


async def test_a_phone_behind_nat_latches_by_ice_integrity(platform: Platform) -> None:
    """bob's SDP names one address, his packets come from another (NAT): his check
    keyed with alice's ice-pwd latches his leg there and he gets alice's media. A
    stranger's check with a guessed key, and one keyed with bob's own password (the
    wrong direction), latch nothing."""
    alice_media, bob_sdp, bob_nat, stranger, confused = Phone(), Phone(), Phone(), Phone(), Phone()
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        assert (await bob.register()).status == 200
        invite = alice.build(
            "INVITE",
            "sip:bob@127.0.0.1",
            body=ice_sdp("alice", alice_media, ALICE),
            content_type="application/sdp",
        )
        seen: list[Message] = []
        caller, _ = await establish(alice, bob, invite, ice_sdp("bob", bob_sdp, BOB), seen)
        offer, answer = seen
        toward_bob = relay_port(offer, ALICE)
        toward_alice = relay_port(answer, BOB)

        username = f"{ALICE[0]}:{BOB[0]}"
        stranger.send(ice_check(username, "GuessedPassword0123456789"), toward_bob)
        confused.send(ice_check(username, BOB[1]), toward_bob)
        bob_nat.send(ice_check(username, ALICE[1]), toward_bob)
        assert await reaches(alice_media, toward_alice, bob_nat)
        assert await stranger.nothing_for(0.2) and await confused.nothing_for(0.1)
        assert await bob_sdp.nothing_for(0.1)
        await delivered_next(alice, bob, alice.in_dialog(caller, "BYE"))
    finally:
        await alice.close()
        await bob.close()
