"""`quietwire up` supervises its children: each one SIGKILLed mid-call comes back
where its peers expect it, with its new pid and a restart in up.json, and the
phones see what they should (issue 16); SIGTERM of `up` mid-call hangs up both
phones with a Reason and leaves no process and no ghost call behind.

One platform (two relays) serves the kill tests: each reads the pids it kills
from up.json, so they do not depend on their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from quietwire.phone.audio import tone, write_wav
from quietwire.phone.call import Phone, PhoneOptions
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.streams import stream_id
from quietwire.runtime.tls import TlsFiles

from tests.conftest import Platform, agent, running_platform
from tests.integration.signaling_harness import establish, next_request
from tests.integration.test_phone_flows import Said, presses_h_after
from tests.interop.test_relay_calls import sdp
from tests.support.platforms import log_lines, logged_platform
from tests.support.wait import wait_until

DOMAIN = "127.0.0.1"
SDP = "application/sdp"
#: keyagreement notices a lost relay at its next discovery round (every 3 s)
#: after `up` took it out of the registry (its TTL, 10 s, would too); then
#: signaling sends the BYEs.
RELAY_LOST_WAIT = 25
#: A child back (its new pid in up.json) after its 0.5 s delay and its start.
RESTART_WAIT = 30


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`quietwire up --relays 2`, its log lines kept, for every kill test."""
    with logged_platform(tmp_path_factory.mktemp("supervised"), ("--relays", "2")) as platform:
        yield platform


def child(platform: Platform, name: str) -> dict[str, Any]:
    """``name``'s entry in up.json (``redis`` or a service)."""
    status = platform.status()
    entry: dict[str, Any] = status["redis"] if name == "redis" else status["services"][name]
    return entry


def kill(platform: Platform, name: str) -> dict[str, Any]:
    """SIGKILL ``name``; its up.json entry from before."""
    before = child(platform, name)
    os.kill(before["pid"], signal.SIGKILL)
    return before


def restarted(platform: Platform, name: str, before: dict[str, Any]) -> dict[str, Any]:
    """``name``'s up.json entry once it shows a new pid and one restart more."""

    def back() -> dict[str, Any] | None:
        entry = child(platform, name)
        return entry if entry["pid"] != before["pid"] else None

    entry = wait_until(back, RESTART_WAIT, f"{name} restarted in up.json")
    assert entry["restarts"] == before["restarts"] + 1
    assert platform.process.poll() is None, "up stopped"
    return entry


@contextlib.asynccontextmanager
async def phones(platform: Platform) -> AsyncIterator[tuple[UserAgent, UserAgent]]:
    """Alice and Bob (registered), unregistered and closed after."""
    alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
    try:
        assert (await bob.register()).status == 200
        yield alice, bob
    finally:
        for ua in (alice, bob):
            with contextlib.suppress(Exception):
                await ua.register(expires=0)
            await ua.close()


async def call(alice: UserAgent, bob: UserAgent, port: int) -> tuple[Request, Dialog, Dialog]:
    """An answered, ACKed call from alice to bob (their SDP on ``port``, ``port + 2``)."""
    invite = alice.build("INVITE", f"sip:bob@{DOMAIN}", body=sdp("alice", port, True))
    invite.headers.set("Content-Type", SDP)
    caller, callee = await establish(alice, bob, invite, sdp("bob", port + 2, True))
    return invite, caller, callee


async def hung_up(ua: UserAgent, call_id: str, timeout: float) -> str:
    """The Reason of the BYE the platform sends ``ua`` for ``call_id`` (answered 200);
    a re-INVITE moving the call to another relay meanwhile is refused (488)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        request = await asyncio.wait_for(ua.requests.get(), max(0.1, deadline - loop.time()))
        if request.method == "INVITE":
            await ua.connection.send(ua.answer(request, 488, "Not Acceptable Here"))
        elif request.method == "BYE":
            await ua.connection.send(ua.answer(request, 200, "OK"))
            if request.call_id == call_id:
                return request.headers.get("Reason") or ""


async def hang_up(alice: UserAgent, bob: UserAgent, caller: Dialog) -> None:
    """Alice's BYE reaches Bob, who answers it, and Alice gets his 200."""
    sending = asyncio.create_task(alice.send(alice.in_dialog(caller, "BYE")))
    await bob.connection.send(bob.answer(await next_request(bob, "BYE", 10), 200, "OK"))
    final = (await sending).final
    assert final is not None and final.status == 200


def gone_from_calls(platform: Platform, call_id: str) -> None:
    wait_until(
        lambda: call_id not in platform.quietwire("calls").stdout,
        15,
        f"{call_id} gone from `quietwire calls`",
        interval=0.3,
    )


async def carrier(platform: Platform, call_id: str) -> tuple[str, relay_pb2.QueryResponse]:
    """The relay (its name in up.json) carrying ``call_id``'s media, and what it says of it."""
    tls = TlsFiles(
        platform.state / "pki" / "grpc.pem", platform.state / "pki" / "grpc.key", platform.ca
    )
    query = relay_pb2.QueryRequest(call_id=stream_id(call_id, 0))
    for name, service in platform.status()["services"].items():
        if not name.startswith("relay"):
            continue
        async with open_channel(service["grpc"], tls) as channel:
            try:
                return name, await relay_pb2_grpc.RelayStub(channel).Query(query, timeout=5)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: another relay's call
                    raise
    raise AssertionError(f"no relay carries {call_id}")


async def test_a_killed_relay_hangs_up_its_calls_and_comes_back(supervised: Platform) -> None:
    """Its calls end with BYE "relay lost" to both phones (they refuse the move to
    the other relay: issue 15, tests/faults/test_migration.py), the other relay
    goes on untouched, and a new call works after the restart."""
    async with phones(supervised) as (alice, bob):
        invite, _, _ = await call(alice, bob, 40000)
        name, _ = await carrier(supervised, invite.call_id)
        other = next(n for n in ("relay", "relay-2") if n != name)
        untouched = child(supervised, other)
        before = kill(supervised, name)
        reasons = await asyncio.gather(
            hung_up(alice, invite.call_id, RELAY_LOST_WAIT),
            hung_up(bob, invite.call_id, RELAY_LOST_WAIT),
        )
        assert reasons == ['SIP;cause=200;text="relay lost: move refused (488)"'] * 2
        gone_from_calls(supervised, invite.call_id)
        after = restarted(supervised, name, before)
        assert (after["grpc"], after["metrics"]) == (before["grpc"], before["metrics"])
        assert after["relay_id"] != before["relay_id"]
        assert child(supervised, other) == untouched
        again, caller, _ = await call(alice, bob, 40010)
        supervised.calls_showing(again.call_id)
        await hang_up(alice, bob, caller)
    said = [line["msg"] for line in log_lines(supervised) if line.get("child") == name]
    assert any(
        line.startswith(f"{name} exited (killed by SIGKILL): restarting in ") for line in said
    )


def test_each_relay_is_registered_where_up_json_says(supervised: Platform) -> None:
    """`--relays 2`: two relays, each in the relay registry under the id and at the
    gRPC address up.json gives, each with its own UDP ports."""
    relays = {n: s for n, s in supervised.status()["services"].items() if n.startswith("relay")}
    assert sorted(relays) == ["relay", "relay-2"]
    assert [relays[n]["media_ports"] for n in sorted(relays)] == ["30000-34999", "35000-39999"]
    client = supervised.redis()
    try:

        def registered() -> bool:
            return all(
                client.hget(f"qw:relay:{s['relay_id']}", "grpc") == s["grpc"].encode()
                for s in supervised.status()["services"].values()
                if "relay_id" in s
            )

        wait_until(registered, 10, "both relays in the registry at their up.json addresses")
    finally:
        client.close()


async def test_a_killed_keyagreement_leaves_established_calls_alone(
    supervised: Platform,
) -> None:
    """The call goes on and ends by its own BYE, then leaves `quietwire calls`;
    a new call is planned by the restarted keyagreement."""
    async with phones(supervised) as (alice, bob):
        invite, caller, _ = await call(alice, bob, 40020)
        before = kill(supervised, "keyagreement")
        after = restarted(supervised, "keyagreement", before)
        assert (after["grpc"], after["metrics"]) == (before["grpc"], before["metrics"])
        with urllib.request.urlopen(f"http://{after['metrics']}/metrics", timeout=10) as reply:
            assert 'quietwire_build_info{service="keyagreement"' in reply.read().decode()
        supervised.calls_showing(invite.call_id)
        await hang_up(alice, bob, caller)
        gone_from_calls(supervised, invite.call_id)
        _, caller, _ = await call(alice, bob, 40030)
        await hang_up(alice, bob, caller)


async def test_a_killed_redis_keeps_registrations_and_calls(supervised: Platform) -> None:
    """Redis comes back with its append-only file: the established call's BYE is
    still routed, and Bob, registered before, still gets a new call."""
    async with phones(supervised) as (alice, bob):
        invite, caller, _ = await call(alice, bob, 40040)
        restarted(supervised, "redis", kill(supervised, "redis"))
        supervised.calls_showing(invite.call_id)
        await hang_up(alice, bob, caller)
        gone_from_calls(supervised, invite.call_id)
        _, caller, _ = await call(alice, bob, 40050)
        await hang_up(alice, bob, caller)


def phone_options(platform: Platform, user: str, tmp: Path, hz: int, **extra: Any) -> PhoneOptions:
    play = tmp / f"{user}-play.wav"
    write_wav(play, tone(hz, 1.0), 8000)
    values: dict[str, Any] = {
        "registrar": "127.0.0.1",
        "port": platform.sip_port,
        "user": user,
        "password": platform.users[user],
        "ca": platform.ca,
        "domain": DOMAIN,
        "zid_cache": tmp / f"{user}-zid.json",
        "play": play,
        "duration": 60.0,
        "keepalive": 1.0,
    }
    values.update(extra)
    return PhoneOptions(**values)


async def relayed(platform: Platform, call_id: str) -> int:
    """Media packets the relay carrying ``call_id`` received so far (both legs)."""
    _, reply = await carrier(platform, call_id)
    return sum(leg.packets_in for leg in reply.legs)


async def test_a_killed_signaling_leaves_media_flowing_and_phones_reregister(
    supervised: Platform, tmp_path: Path
) -> None:
    """Secure media goes on through the relay while signaling is away; our phones
    notice their flows died, reconnect and register again (RFC 5626), the
    caller's BYE reaches the callee, and a new call works."""
    said = Said()
    hang_up_now = asyncio.Event()
    alice = Phone(
        phone_options(supervised, "alice", tmp_path, 440, keys=presses_h_after(hang_up_now)), said
    )
    bob = Phone(phone_options(supervised, "bob", tmp_path, 880), said)
    await alice.start()
    await bob.start()
    try:
        answering = asyncio.create_task(bob.answer(timeout=10))
        calling = asyncio.create_task(alice.call(f"sip:bob@{DOMAIN}"))
        await said.seen("secure ", 2)
        listed = supervised.calls_showing("zrtp-verified")
        call_id = next(line.split()[0] for line in listed.splitlines() if "zrtp-verified" in line)
        before = kill(supervised, "signaling")
        packets = await relayed(supervised, call_id)
        await said.seen("flow lost: reconnecting", 2)
        after = restarted(supervised, "signaling", before)
        assert after["grpc"] == before["grpc"]
        await said.seen("registered sip:alice@127.0.0.1 (flow recovered)")
        await said.seen("registered sip:bob@127.0.0.1 (flow recovered)")
        assert await relayed(supervised, call_id) > packets + 50, "media stopped with signaling"
        supervised.calls_showing(f"{call_id} zrtp zrtp-verified")
        hang_up_now.set()
        caller, callee = await calling, await answering
        assert caller.secured is not None and callee.secured is not None
        assert "BYE answered 200" in said.lines, said.lines
        assert callee.ended_by_peer
    finally:
        await alice.close()
        await bob.close()
    async with phones(supervised) as (caller_ua, callee_ua):
        _, dialog, _ = await call(caller_ua, callee_ua, 40070)
        await hang_up(caller_ua, callee_ua, dialog)


def bind(host: str, port: int) -> socket.socket | None:
    """A socket listening on ``host:port``, or None while another holds it."""
    try:
        return socket.create_server((host, port))
    except OSError:
        return None


async def test_a_restart_waits_for_its_port(supervised: Platform) -> None:
    """A relay's gRPC port taken by another program while it was away: `up` says
    so, keeps trying, and the relay comes back on it once it is free."""
    name = "relay-2"
    before = child(supervised, name)
    host, port = before["grpc"].rsplit(":", 1)
    supervised.process.send_signal(signal.SIGSTOP)  # up cannot restart it before we hold the port
    try:
        kill(supervised, name)
        squatter = wait_until(lambda: bind(host, int(port)), 10, f"{name}'s port free")
    finally:
        supervised.process.send_signal(signal.SIGCONT)
    with squatter:
        wait_until(
            lambda: any(
                line["msg"].startswith(f"{name} did not start again")
                and f"before it listened again on its gRPC port {port}" in line["msg"]
                for line in log_lines(supervised)
            ),
            RESTART_WAIT,
            "up saying the relay did not start again",
        )
    after = restarted(supervised, name, before)
    assert after["grpc"] == before["grpc"]
    assert after["restarts"] == before["restarts"] + 1


async def test_sigterm_hangs_up_every_call_with_a_reason(tmp_path: Path) -> None:
    """Both phones get a BYE saying why; `up` exits 0 leaving no process, and the
    next `up` on the same state lists no ghost of the call."""
    with logged_platform(tmp_path) as platform:
        pids = [child(platform, "redis")["pid"]]
        pids += [s["pid"] for s in platform.status()["services"].values()]
        async with phones(platform) as (alice, bob):
            invite, _, _ = await call(alice, bob, 40060)
            platform.calls_showing(invite.call_id)
            platform.process.send_signal(signal.SIGTERM)
            reasons = await asyncio.gather(
                hung_up(alice, invite.call_id, 10), hung_up(bob, invite.call_id, 10)
            )
            assert reasons == ['SIP;cause=200;text="platform stopping"'] * 2
            assert await asyncio.to_thread(platform.process.wait, 30) == 0
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 10, "children gone")
    with running_platform(tmp_path) as again:
        assert invite.call_id not in again.quietwire("calls").stdout
