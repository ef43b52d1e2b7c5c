"""Attacks on the media relay (issue 12, findings 2, 7 and 12), each against a real
relay process over real UDP and gRPC: what a stranger who can reach the relay's
ports tries, and what it must not get."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from aioice import stun as aioice_stun
from quietwire.protocols.rtp.packets import Rtp
from quietwire.relay.legs import Event, EventKind, Side
from quietwire.relay.ports import PortPool
from quietwire.relay.servicer import RelayServicer
from quietwire.relay.sessions import Relay
from quietwire.rpc.relay.v1 import relay_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2_grpc
from quietwire.runtime.channels import channel_options, server_options

from tests.conftest import RedisServer, free_port
from tests.integration.test_relay_sessions import HELLO, HELLO_HASH, PLAIN_STUN
from tests.support.relay import relay_process
from tests.support.wait import eventually

#: The relay lets the test's phones on loopback in; 127.0.0.2 stands for the
#: platform's own network, which it must never send to.
PLATFORM = "127.0.0.2"
CALLER, CALLEE = pb.LEG_SIDE_CALLER, pb.LEG_SIDE_CALLEE
Stub = relay_pb2_grpc.RelayStub


class Phone:
    """A UDP socket: a phone, or a stranger."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address = pb.Address(host=host, port=self.sock.getsockname()[1])

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    async def receive(self, timeout: float = 2.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 2048), timeout)
        except TimeoutError:
            return None

    async def nothing_for(self, seconds: float) -> bool:
        return await self.receive(seconds) is None


def rtp(sequence: int) -> bytes:
    return Rtp(0, sequence, 160 * sequence, 0xCA11, bytes([sequence % 256]) * 160).serialize()


def stun_lookalike() -> bytes:
    """A Binding request with the magic cookie but no ICE integrity (aioice builds it)."""
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    message.attributes["USERNAME"] = "guess:guess"
    return bytes(message)


def zrtp(message_type: bytes) -> bytes:
    """The caller's Hello packet relabelled as another message type (the relay
    classifies by the type block; the CRC is not its business)."""
    packet = bytearray(HELLO)
    packet[16:24] = message_type
    return bytes(packet)


@pytest.fixture(scope="module")
def relay_address(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One relay process for the module: loopback allowed, the 'platform' denied."""
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    with relay_process(
        redis_server.url,
        log,
        QW_RELAY_PEER_ALLOW="127.0.0.0/8",
        QW_RELAY_PEER_DENY=f"{PLATFORM}/32",
    ) as relay:
        yield relay.address


@pytest.fixture
async def stub(relay_address: str) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(relay_address) as channel:
        yield relay_pb2_grpc.RelayStub(channel)


async def ringing_call(stub: Stub, call_id: str, caller: Phone) -> dict[int, int]:
    """What the planner does for an INVITE: both legs allocated (the callee's knows
    nothing yet), the caller's told its SDP. The relay ports by side."""
    legs = [
        pb.LegSpec(side=CALLER, rtcp_mux=True, zrtp_hash=HELLO_HASH),
        pb.LegSpec(side=CALLEE, rtcp_mux=True),
    ]
    allocated = await stub.Allocate(pb.AllocateRequest(call_id=call_id, legs=legs))
    update = pb.UpdateRequest(call_id=call_id, side=CALLER, remote_rtp=caller.address)
    await stub.Update(update)
    return {leg.side: leg.rtp.port for leg in allocated.legs}


async def legs(stub: Stub, call_id: str) -> dict[int, pb.LegStats]:
    return {leg.side: leg for leg in (await stub.Query(pb.QueryRequest(call_id=call_id))).legs}


async def latched(stub: Stub, call_id: str, side: int) -> None:
    """Until that leg has latched (Query is where a latch shows outside the process)."""

    async def leg_latched() -> bool:
        return (await legs(stub, call_id))[side].latched

    await eventually(leg_latched, 10, f"leg {side} of {call_id} latched", interval=0.02)


async def introduce(stub: Stub, call_id: str, side: int, phone: Phone, port: int) -> None:
    """The phone's first packet, from its SDP address; until its leg has latched."""
    phone.send(PLAIN_STUN, port)
    await latched(stub, call_id, side)


async def test_a_stranger_cannot_take_a_ringing_leg(stub: Stub) -> None:
    """Finding 2: while the callee rings, a stranger sends 20 bytes and a STUN-shaped
    request to the callee's leg port: no latch. After the answer the callee gets the
    caller's media and the stranger nothing."""
    caller, callee, stranger = Phone(), Phone(), Phone()
    port = await ringing_call(stub, "hijack", caller)
    caller.send(HELLO, port[CALLER])
    stranger.send(bytes(20), port[CALLEE])
    stranger.send(stun_lookalike(), port[CALLEE])
    caller.send(rtp(1), port[CALLER])
    assert await stranger.nothing_for(0.5)
    assert not (await legs(stub, "hijack"))[CALLEE].latched

    answer = pb.UpdateRequest(call_id="hijack", side=CALLEE, remote_rtp=callee.address)
    await stub.Update(answer)
    stranger.send(bytes(20), port[CALLEE])
    await introduce(stub, "hijack", CALLEE, callee, port[CALLEE])
    got = None
    for n in range(2, 12):
        caller.send(rtp(n), port[CALLER])
        got = await callee.receive()
        assert got is not None
    assert got == rtp(11)
    assert await stranger.nothing_for(0.3)
    assert (await legs(stub, "hijack"))[CALLEE].packets_dropped >= 3
    await stub.Release(pb.ReleaseRequest(call_id="hijack"))


def ice_check(username: str, password: str) -> bytes:
    """An ICE connectivity check (RFC 8445 section 7.2.2), built by aioice."""
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.add_message_integrity(password.encode())
    message.add_fingerprint()
    return bytes(message)


async def test_ice_integrity_proves_a_phone_behind_nat(stub: Stub) -> None:
    """Finding 2, with ICE: a callee whose packets come from an address its SDP
    never named latches by a check keyed with the caller's ice-pwd; a stranger's
    check under a guessed password does not."""
    caller, callee_sdp, callee_nat, stranger = Phone(), Phone(), Phone(), Phone()
    port = await ringing_call(stub, "ice", caller)
    secret = "caller-ice-password-0123456789"
    for side, phone, ufrag, pwd in (
        (CALLER, caller, "AbCd", secret),
        (CALLEE, callee_sdp, "WxYz", "callee-ice-password-0123456789"),
    ):
        sdp = pb.UpdateRequest(call_id="ice", side=side, remote_rtp=phone.address)
        sdp.ice_ufrag, sdp.ice_pwd = ufrag, pwd
        await stub.Update(sdp)
    stranger.send(ice_check("AbCd:WxYz", "guessed-password-0123456789"), port[CALLEE])
    callee_nat.send(ice_check("AbCd:WxYz", secret), port[CALLEE])
    await latched(stub, "ice", CALLEE)
    caller.send(rtp(1), port[CALLER])
    assert await callee_nat.receive() == rtp(1)
    assert await stranger.nothing_for(0.3)
    await stub.Release(pb.ReleaseRequest(call_id="ice"))


async def test_media_never_goes_to_a_name_or_a_refused_address(stub: Stub) -> None:
    """Finding 7: a callee SDP with ``c=IN IP4 localhost`` (a name: never resolved),
    or with an address of the platform's own network (even one that sends from
    there): not one of the caller's packets goes there."""
    for call_id, victim, host in (
        ("by-name", Phone(), "localhost"),
        ("platform", Phone(PLATFORM), PLATFORM),
    ):
        caller = Phone()
        port = await ringing_call(stub, call_id, caller)
        sdp = pb.Address(host=host, port=victim.address.port)
        await stub.Update(pb.UpdateRequest(call_id=call_id, side=CALLEE, remote_rtp=sdp))
        victim.send(PLAIN_STUN, port[CALLEE])
        for n in range(1, 21):
            caller.send(rtp(n), port[CALLER])
        assert await victim.nothing_for(0.5)
        stats = await legs(stub, call_id)
        assert stats[CALLER].packets_in == 20 and not stats[CALLEE].latched
        await stub.Release(pb.ReleaseRequest(call_id=call_id))


async def test_a_late_subscriber_learns_every_hello(stub: Stub) -> None:
    """Finding 12: ZRTP messages seen while nobody was subscribed (keyagreement
    reconnecting) come first on the next stream, in order, marked replayed; then
    live events follow."""
    caller, callee = Phone(), Phone()
    port = await ringing_call(stub, "late", caller)
    await stub.Update(pb.UpdateRequest(call_id="late", side=CALLEE, remote_rtp=callee.address))
    await introduce(stub, "late", CALLEE, callee, port[CALLEE])

    first = stub.WatchEvents(pb.WatchEventsRequest())
    caller.send(HELLO, port[CALLER])
    assert await callee.receive() == HELLO
    first.cancel()  # the subscriber's connection broke
    caller.send(zrtp(b"Commit  "), port[CALLER])  # in the gap
    assert await callee.receive() is not None

    again = stub.WatchEvents(pb.WatchEventsRequest())
    seen = []
    async with asyncio.timeout(10):
        while len(seen) < 2:
            event = await again.read()
            if event.call_id == "late":
                seen.append(event)
    assert [(e.zrtp_message, e.replayed) for e in seen] == [("Hello", True), ("Commit", True)]
    assert seen[0].zrtp_hello_hash == HELLO_HASH.split()[1]
    caller.send(zrtp(b"Conf2ACK"), port[CALLER])
    async with asyncio.timeout(10):
        event = await again.read()
    assert (event.zrtp_message, event.replayed) == ("Conf2ACK", False)
    again.cancel()
    await stub.Release(pb.ReleaseRequest(call_id="late"))


async def idle_stream_outcome(servicer: RelayServicer, client: grpc.aio.Channel) -> str:
    """How an event stream fares for 4.5 seconds after one event: "open" or the status
    that ended it (grpc's default server ends it after about three)."""
    stream = relay_pb2_grpc.RelayStub(client).WatchEvents(pb.WatchEventsRequest())
    try:
        async with asyncio.timeout(4.5):
            while not servicer.watchers:  # noqa: ASYNC110 - the server has no hook for it
                await asyncio.sleep(0.01)
            servicer.publish(Event("idle", Side.CALLER, EventKind.LATCHED))
            assert (await stream.read()).call_id == "idle"
            await stream.read()
    except TimeoutError:
        return "open"
    except grpc.aio.AioRpcError as exc:
        return exc.details() or exc.code().name
    finally:
        stream.cancel()
    return "an event"


@pytest.mark.parametrize("consistent", [True, False])
async def test_keepalive_agreed_on_both_ends(consistent: bool) -> None:
    """Finding 12: a client pinging as quietwire's clients do (here every second,
    not every 20 s) keeps a quiet event stream open on a server built with the
    matching options; grpc's defaults answer GOAWAY too_many_pings (the control)."""
    first = 2 * (free_port() // 2)
    engine = Relay(PortPool("127.0.0.1", first, first + 3), lambda _: None)
    servicer = RelayServicer(engine, "r", "127.0.0.1")
    server = grpc.aio.server(options=server_options(1000) if consistent else ())
    relay_pb2_grpc.add_RelayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        options = channel_options(1000)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as client:
            outcome = await idle_stream_outcome(servicer, client)
    finally:
        await server.stop(None)
        await engine.close()
    assert outcome == ("open" if consistent else "Too many pings")


def test_ports_are_drawn_at_random() -> None:
    """Finding 2: the next call's ports cannot be told from the last call's."""
    first = 2 * (free_port() // 2)
    pool = PortPool("127.0.0.1", first, first + 199)
    pairs = [pool.take() for _ in range(8)]
    try:
        ports = [pair.port for pair in pairs]
        assert ports != list(range(first, first + 16, 2))
        assert max(ports) - min(ports) > 16
    finally:
        for pair in pairs:
            pool.give_back(pair)
