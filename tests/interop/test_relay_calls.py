"""Calls between quietwire phones through `quietwire up` and its relay: the relay
sees the handshake (zrtp-verified), and a phone that dies mid-call does not
leave ports or calls behind: the media times out and the platform hangs up the
other phone."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from quietwire.phone import sdp as sdp_module
from quietwire.phone.call import Phone, PhoneOptions
from quietwire.phone.sdp import describe

from tests.conftest import Platform, agent, running_platform
from tests.integration.signaling_harness import establish, next_request
from tests.interop.conftest import phone_process
from tests.support.wait import eventually, wait_line, wait_until

pytestmark = pytest.mark.interop
MEDIA_TIMEOUT = "2"
SDP = "application/sdp"
#: Seconds for the relays' registry entries to show a change (a heartbeat is every 3 s).
HEARTBEAT_WAIT = 10


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Platform]:
    """A platform whose relay ends calls after MEDIA_TIMEOUT seconds without media
    (the default ``platform`` does not end calls that send none while a test runs)."""
    with running_platform(tmp_path, QW_RELAY_MEDIA_TIMEOUT=MEDIA_TIMEOUT) as up:
        yield up


def phone(running: Platform, user: str, *command: str) -> subprocess.Popen[str]:
    zid_cache = str(running.state.parent / f"{user}-zid.json")
    return phone_process(running, user, *command, "--duration", "60", "--zid-cache", zid_cache)


def relay_calls(platform: Platform) -> int:
    """Active calls the relays report in their registry entries."""
    client = platform.redis()
    try:
        ids = client.smembers("qw:relays")
        return sum(int(client.hget(f"qw:relay:{i.decode()}", "active") or 0) for i in ids)
    finally:
        client.close()


def relay_calls_become(platform: Platform, count: int) -> None:
    wait_until(
        lambda: relay_calls(platform) == count, HEARTBEAT_WAIT, f"relays report {count} calls", 0.2
    )


async def relay_calls_reach(platform: Platform, count: int) -> None:
    async def reached() -> bool:
        return await asyncio.to_thread(relay_calls, platform) == count

    await eventually(reached, HEARTBEAT_WAIT, f"relays report {count} calls", 0.2)


def test_dead_phone_frees_the_relay(running: Platform) -> None:
    bob = phone(running, "bob", "answer")
    wait_line(bob, "registered")
    alice = phone(running, "alice", "call", "sip:bob@127.0.0.1")
    try:
        sas = wait_line(alice, "SAS ")
        assert wait_line(bob, "SAS ") == sas
        assert " zrtp zrtp-verified" in running.calls_showing("zrtp-verified")
        relay_calls_become(running, 1)
        alice.kill()  # the caller's phone dies: no BYE, its media stops
        # The platform hangs up the callee (long before its 60 s call would end).
        assert "media timeout" in wait_line(bob, "hung up: ", timeout=20)
        relay_calls_become(running, 0)
    finally:
        for process in (alice, bob):
            if process.poll() is None:
                process.kill()
            process.wait(10)


async def test_tampered_zrtp_hash_is_a_mismatch(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone whose SDP a=zrtp-hash does not match its Hello (what a man in the
    middle produces): the relay's Hello hash gives it away; the call is torn down."""

    def options(user: str) -> PhoneOptions:
        return PhoneOptions(
            registrar="127.0.0.1",
            port=platform.sip_port,
            user=user,
            password=platform.users[user],
            ca=platform.ca,
            domain="127.0.0.1",
            zid_cache=platform.state.parent / f"{user}-zid.json",
            duration=1.0,
        )

    alice, bob = Phone(options("alice"), lambda _: None), Phone(options("bob"), lambda _: None)
    await alice.start()
    await bob.start()
    try:
        answering = asyncio.create_task(bob.answer(timeout=10))
        monkeypatch.setattr(
            sdp_module,
            "describe",
            lambda address, port, zrtp_hash, *rest: describe(
                address, port, "1.10 " + "ab" * 32, *rest
            ),
        )
        calling = asyncio.create_task(alice.call("sip:bob@127.0.0.1"))
        callee = await answering
        caller = await calling
    finally:
        await alice.close()
        await bob.close()
    assert callee.secured is None and caller.secured is None
    # Whichever comes first ends the call: the callee's own binding check, or the
    # platform's BYE after the relay saw the mismatch.
    assert callee.failure is not None
    assert "a=zrtp-hash" in callee.failure or callee.ended_by_peer, callee.failure
    security = platform.quietwire("calls", callee.call_id)
    assert " zrtp zrtp-mismatch" in security.stdout, security.stdout + security.stderr


def sdp(user: str, port: int, zrtp: bool) -> bytes:
    lines = [
        "v=0",
        f"o={user} 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        *(["a=zrtp-hash:1.10 " + "cd" * 32] if zrtp else []),
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_plain_answer_to_a_zrtp_offer_is_refused(platform: Platform) -> None:
    """The callee answers a ZRTP offer with plain RTP: its 2xx is not forwarded, the
    caller gets 488 with the reason, and the callee's half-made call is ACKed and
    hung up so nothing stays open (the relay's session for it is gone)."""
    alice, bob = [await agent(platform, user) for user in ("alice", "bob")]
    try:
        assert (await bob.register()).status == 200
        offer = sdp("alice", 40000, True)
        invite = alice.build(
            "INVITE", "sip:bob@127.0.0.1", body=offer, content_type="application/sdp"
        )
        sending = asyncio.create_task(alice.send(invite))
        incoming = await next_request(bob, "INVITE")
        await relay_calls_reach(platform, 1)  # the offer's relay session
        ok = bob.answer(incoming, 200, "OK", body=sdp("bob", 40002, False))
        ok.headers.set("Content-Type", "application/sdp")
        await bob.connection.send(ok)
        exchange = await sending
        assert exchange.final is not None and exchange.final.status == 488
        assert "plain RTP refused" in (exchange.final.headers.get("Warning") or "")
        ack = await next_request(bob, "ACK")
        bye = await next_request(bob, "BYE")
        assert ack.call_id == bye.call_id == incoming.call_id
        assert bye.to.tag == ok.to.tag and "plain RTP" in (bye.headers.get("Reason") or "")
        await bob.connection.send(bob.answer(bye, 200, "OK"))
    finally:
        await alice.close()
        await bob.close()
    await relay_calls_reach(platform, 0)


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
async def test_midcall_answer_dropping_zrtp_ends_the_call(platform: Platform, method: str) -> None:
    """Mid-call, the answer to a re-INVITE or an UPDATE removes ZRTP for plain RTP
    (a downgrade): the offerer gets 488 with the reason and the platform hangs up
    both phones."""
    alice, bob = [await agent(platform, user) for user in ("alice", "bob")]
    try:
        assert (await bob.register()).status == 200
        invite = alice.build(
            "INVITE",
            "sip:bob@127.0.0.1",
            body=sdp("alice", 40000, True),
            content_type="application/sdp",
        )
        _, answered = await establish(alice, bob, invite, sdp("bob", 40002, True))

        reoffer = bob.in_dialog(answered, method)
        reoffer.headers.add("Content-Type", SDP)
        reoffer.body = sdp("bob", 40004, True)
        resending = asyncio.create_task(bob.send(reoffer))
        offered = await next_request(alice, method)
        answer = alice.answer(offered, 200, "OK", body=sdp("alice", 40006, False))
        await alice.connection.send(answer)
        refused = await resending
        assert refused.final is not None and refused.final.status == 488
        for ua in (alice, bob):
            bye = await next_request(ua, "BYE")
            assert "plain RTP" in (bye.headers.get("Reason") or "")
            await ua.connection.send(ua.answer(bye, 200, "OK"))
    finally:
        await alice.close()
        await bob.close()


def sdes_sdp(user: str, port: int) -> bytes:
    return sdp(user, port, False).replace(b"RTP/AVP", b"RTP/SAVP") + (
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:dGhlIGFuc3dlcmVyIGtleSwgMzAgYnl0ZXMgb2su\r\n"
    )


async def test_user_policy_stricter_than_the_deployment(platform: Platform) -> None:
    """The deployment takes SDES (hop by hop); bob asks for end-to-end only, so an
    SDES call to bob is refused with 488 — and reaches him again once he is back
    on the default."""
    alice, bob = [await agent(platform, user) for user in ("alice", "bob")]
    try:
        assert (await bob.register()).status == 200
        assert platform.quietwire("user", "policy", "bob", "e2e_only").returncode == 0
        offer = sdes_sdp("alice", 40000)
        invite = alice.build("INVITE", "sip:bob@127.0.0.1", body=offer, content_type=SDP)
        refused = await alice.send(invite)
        assert refused.final is not None and refused.final.status == 488
        assert "SDES" in (refused.final.headers.get("Warning") or "")

        assert platform.quietwire("user", "policy", "bob", "default").returncode == 0
        again = alice.build("INVITE", "sip:bob@127.0.0.1", body=offer, content_type=SDP)
        sending = asyncio.create_task(alice.send(again))
        incoming = await next_request(bob, "INVITE")
        await bob.connection.send(bob.answer(incoming, 486, "Busy Here"))
        busy = await sending
        assert busy.final is not None and busy.final.status == 486
    finally:
        await alice.close()
        await bob.close()
    unknown = platform.quietwire("user", "policy", "mallory", "e2e_only")
    assert unknown.returncode == 1 and "no such user" in unknown.stderr
