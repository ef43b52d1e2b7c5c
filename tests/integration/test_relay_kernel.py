"""Kernel forwarding (QW_RELAY_KERNEL_FORWARDING): a real relay process in a
network namespace of the test's own, programming nftables and conntrack there;
the phones are sockets on the other end of a veth pair."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from quietwire.protocols.rtp.packets import Rtp
from quietwire.relay.kernel import MARK
from quietwire.rpc.relay.v1 import relay_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2_grpc
from quietwire.runtime.legmemory import LegMemory, LegSide, carried, leg_memory_key, recall

from tests.conftest import quietwire_env, start_redis, start_service, stop_redis
from tests.integration.test_relay_sessions import HELLO, HELLO_HASH, PLAIN_STUN
from tests.netns import Netns, available, netns
from tests.support.wait import eventually

pytestmark = pytest.mark.skipif(not available(), reason="a network namespace needs root")
PORTS = (41000, 41099)
TABLE = f"quietwire_relay_{PORTS[0]}"


class Phone:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(1.0)
        self.address = pb.Address(host=address, port=self.sock.getsockname()[1])

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def receive(self, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]] | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(2048)
        except TimeoutError:
            return None


@dataclass
class RunningRelay:
    space: Netns
    stub: relay_pb2_grpc.RelayStub
    process: subprocess.Popen[str]


@pytest.fixture
def space() -> Iterator[Netns]:
    sysctls = {"net.ipv4.ip_forward": "1", "net.netfilter.nf_conntrack_acct": "1"}
    with netns(sysctls) as made:
        yield made


@pytest.fixture
async def relay(space: Netns, tmp_path: Path) -> AsyncIterator[RunningRelay]:
    redis = start_redis(tmp_path, "--unixsocket", str(tmp_path / "redis.sock"))
    env = quietwire_env(
        QW_REDIS_URL=f"unix://{tmp_path / 'redis.sock'}",
        QW_GRPC_INSECURE="true",
        QW_GRPC_BIND=space.inside,
        QW_METRICS_PORT="0",
        QW_RELAY_BIND=space.inside,
        QW_RELAY_ADVERTISE=space.inside,
        QW_RELAY_PORT_MIN=str(PORTS[0]),
        QW_RELAY_PORT_MAX=str(PORTS[1]),
        QW_RELAY_KERNEL_FORWARDING="true",
        QW_DRAIN_TIMEOUT="1",
    )
    log = (tmp_path / "relay.log").open("w")
    started = await asyncio.to_thread(start_service, "relay", env, space.prefix, stderr=log)
    process = started.process
    try:
        async with grpc.aio.insecure_channel(f"{space.inside}:{started.grpc_port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 15)
            yield RunningRelay(space, relay_pb2_grpc.RelayStub(channel), process)
    finally:
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)
        finally:
            stop_redis(redis)
            log.close()


def rtp(sequence: int, tag: bytes) -> bytes:
    return Rtp(0, sequence, 160 * sequence, 0xABC, tag * 160).serialize()


async def leg_stats(relay: RunningRelay, call_id: str) -> dict[int, pb.LegStats]:
    answer = await relay.stub.Query(pb.QueryRequest(call_id=call_id))
    return {leg.side: leg for leg in answer.legs}


async def test_settled_call_forwarded_by_the_kernel(relay: RunningRelay) -> None:
    """ZRTP takes the relay's sockets; once RTP flows the call is on the kernel
    path (its elements in the relay's table), media goes both ways from the relay's
    ports, conntrack counters reach Query, a stranger is still refused, a ZRTP
    message after settling is still seen, and Release leaves no element and no flow."""
    space = relay.space
    a, b, stranger = Phone(space.outside), Phone(space.outside), Phone(space.outside)
    legs = [
        pb.LegSpec(side=pb.LEG_SIDE_CALLER, rtcp_mux=True, zrtp_hash=HELLO_HASH),
        pb.LegSpec(side=pb.LEG_SIDE_CALLEE, rtcp_mux=True),
    ]
    allocated = await relay.stub.Allocate(pb.AllocateRequest(call_id="k1", legs=legs))
    port = {leg.side: leg.rtp.port for leg in allocated.legs}
    to_a, to_b = (space.inside, port[pb.LEG_SIDE_CALLER]), (space.inside, port[pb.LEG_SIDE_CALLEE])
    for side, phone in ((pb.LEG_SIDE_CALLER, a), (pb.LEG_SIDE_CALLEE, b)):
        await relay.stub.Update(pb.UpdateRequest(call_id="k1", side=side, remote_rtp=phone.address))

    b.send(PLAIN_STUN, to_b)  # media goes only to phones that spoke from where they said

    async def callee_latched() -> bool:  # Query is where a latch shows outside the process
        return (await leg_stats(relay, "k1"))[pb.LEG_SIDE_CALLEE].latched

    await eventually(callee_latched, 10, "the callee's leg latched")
    a.send(HELLO, to_a)
    assert (got := b.receive()) is not None and got[0] == HELLO

    def exchange(n: int) -> None:
        a.send(rtp(n, b"a"), to_a)
        got = b.receive()
        assert got is not None and got[0] == rtp(n, b"a") and got[1] == to_b
        b.send(rtp(n, b"b"), to_b)
        got = a.receive()
        assert got is not None and got[0] == rtp(n, b"b") and got[1] == to_a

    exchange(1)  # RTP both ways settles the call: the relay programs the kernel

    async def programmed() -> bool:
        elements = await asyncio.to_thread(space.run, "nft", "list", "map", "ip", TABLE, "to_peer")
        return f"{space.outside} . {a.address.port} . {to_a[1]}" in elements

    await eventually(programmed, 10, "the call's elements in the kernel's table")
    for n in range(2, 51):  # the kernel's from now on
        exchange(n)

    stranger.send(rtp(99, b"s"), to_a)
    assert b.receive(0.3) is None
    goclear = bytearray(HELLO)
    goclear[16:24] = b"GoClear "
    a.send(bytes(goclear), to_a)
    assert (got := b.receive()) is not None and got[0] == bytes(goclear)

    async def counted() -> dict[int, pb.LegStats] | None:
        """The legs' stats once the kernel's counters (read every second) are in."""
        stats = await leg_stats(relay, "k1")
        callee = stats[pb.LEG_SIDE_CALLEE].packets_in >= 49
        return stats if stats[pb.LEG_SIDE_CALLER].packets_in >= 50 + 2 and callee else None

    stats = await eventually(counted, 10, "the kernel's packet counters in Query", 0.2)
    caller = stats[pb.LEG_SIDE_CALLER]
    assert caller.packets_dropped == 1
    assert "GoClear" in caller.zrtp_messages_seen and "Hello" in caller.zrtp_messages_seen

    flows = space.run("cat", "/proc/net/nf_conntrack").splitlines()
    ours = [flow for flow in flows if f"dport={to_a[1]} " in flow or f"dport={to_b[1]} " in flow]
    assert any(f"mark={MARK}" in flow for flow in ours), ours

    await relay.stub.Release(pb.ReleaseRequest(call_id="k1"))

    async def unprogrammed() -> bool:
        table = await asyncio.to_thread(space.run, "nft", "list", "table", "ip", TABLE)
        return f"{space.outside} ." not in table

    await eventually(unprogrammed, 10, "the call's elements gone from the kernel's table")
    a.send(rtp(100, b"a"), to_a)
    assert b.receive(0.3) is None
    flows = space.run("cat", "/proc/net/nf_conntrack").splitlines()
    # A stranger's untranslated flow may linger until it times out; it forwards nothing.
    assert not [flow for flow in flows if f"mark={MARK}" in flow], flows


async def test_a_carried_call_on_the_kernel_path(relay: RunningRelay, tmp_path: Path) -> None:
    """A call moved here from another relay (issue 15): its legs latch on the carried
    address and SSRC without Hello nor SDP, its media then takes the kernel path;
    the phone's SSRC from a stranger, or its address with another SSRC, is refused."""
    space = relay.space
    a, b, stranger = Phone(space.outside), Phone(space.outside), Phone(space.outside)
    ssrc = {pb.LEG_SIDE_CALLER: 0xA11CE, pb.LEG_SIDE_CALLEE: 0xB0B}
    memory = {
        side: LegMemory((phone.address.host, phone.address.port), None, (ssrc[side],))
        for side, phone in ((pb.LEG_SIDE_CALLER, a), (pb.LEG_SIDE_CALLEE, b))
    }
    legs = [pb.LegSpec(side=side, rtcp_mux=True, carried=carried(memory[side])) for side in ssrc]
    allocated = await relay.stub.Allocate(pb.AllocateRequest(call_id="k2", legs=legs))
    port = {leg.side: leg.rtp.port for leg in allocated.legs}
    to_a, to_b = (space.inside, port[pb.LEG_SIDE_CALLER]), (space.inside, port[pb.LEG_SIDE_CALLEE])

    def packet(side: int, sequence: int) -> bytes:
        return Rtp(0, sequence, 160 * sequence, ssrc[side], bytes(170)).serialize()

    b.send(packet(pb.LEG_SIDE_CALLEE, 1), to_b)
    stranger.send(packet(pb.LEG_SIDE_CALLER, 1), to_a)
    a.send(Rtp(0, 1, 160, 0xBAD, bytes(170)).serialize(), to_a)
    assert b.receive(0.3) is None
    for n in range(2, 52):
        a.send(packet(pb.LEG_SIDE_CALLER, n), to_a)
        got = b.receive()
        assert got is not None and got == (packet(pb.LEG_SIDE_CALLER, n), to_b)
        b.send(packet(pb.LEG_SIDE_CALLEE, n), to_b)
        got = a.receive()
        assert got is not None and got == (packet(pb.LEG_SIDE_CALLEE, n), to_a)
    elements = space.run("nft", "list", "map", "ip", TABLE, "to_peer")
    assert f"{space.outside} . {a.address.port} . {to_a[1]}" in elements
    stranger.send(packet(pb.LEG_SIDE_CALLER, 99), to_a)
    assert b.receive(0.3) is None
    stats = await leg_stats(relay, "k2")
    assert stats[pb.LEG_SIDE_CALLER].packets_dropped == 3

    # What this relay remembers for the next move: where it latched, the SSRCs.
    client = redis.from_url(f"unix://{tmp_path / 'redis.sock'}")
    try:

        async def remembered() -> dict[LegSide, LegMemory] | None:
            found = await recall(client, "k2")
            latched = all(found.get(LegSide(side), LegMemory()).rtp_source for side in ssrc)
            return found if latched else None

        found = await eventually(remembered, 10, "the kernel relay's leg memory", 0.05)
        assert found == {LegSide(side): memory[side] for side in ssrc}
        await relay.stub.Release(pb.ReleaseRequest(call_id="k2"))
        await eventually(lambda: _gone(client, "k2"), 10, "the memory forgotten on Release", 0.05)
    finally:
        await client.aclose()


async def _gone(client: redis.Redis, call_id: str) -> bool:
    return not await client.exists(leg_memory_key(call_id))


async def test_table_goes_with_the_relay(relay: RunningRelay) -> None:
    assert TABLE in relay.space.run("nft", "list", "tables")
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(15) == 0
    assert TABLE not in relay.space.run("nft", "list", "tables")


def test_kernel_forwarding_refused_without_its_sysctls(tmp_path: Path) -> None:
    """Without ip_forward in its namespace the relay stops at start naming the setting."""
    with netns() as space:
        env = quietwire_env(
            QW_REDIS_URL=f"unix://{tmp_path / 'absent.sock'}",
            QW_GRPC_INSECURE="true",
            QW_GRPC_BIND=space.inside,
            QW_RELAY_BIND=space.inside,
            QW_RELAY_KERNEL_FORWARDING="true",
        )
        done = subprocess.run(
            [*space.prefix, sys.executable, "-m", "quietwire", "relay"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert "QW_RELAY_KERNEL_FORWARDING" in done.stderr and "ip_forward" in done.stderr
    assert "Traceback" not in done.stderr
