"""Signaling killed mid-call and back on its port: media goes on through the relay,
the call's record and relay session stay, our phones notice the lost flow,
reconnect and register again (RFC 5626), and the caller's later BYE ends the call
and frees everything."""

from __future__ import annotations

import asyncio
from pathlib import Path

from quietwire.phone.call import Phone
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel

from tests.faults.cluster import Cluster
from tests.integration.test_phone import options
from tests.integration.test_phone_flows import Said, call, presses_h_after
from tests.support.wait import eventually

#: Seconds for each step the phones take (reconnecting, registering again).
STEP = 30
#: Seconds after the BYE by which nothing of the call is left.
WITHIN = 8


async def test_a_call_outlives_a_signaling_restart_and_its_bye_frees_everything(
    cluster: Cluster, tmp_path: Path
) -> None:
    hang_up = asyncio.Event()
    said = Said()
    port = cluster.sip_port
    alice = Phone(
        options(
            cluster.pki, port, "alice", tmp_path, 440, keys=presses_h_after(hang_up), duration=90.0
        ),
        said,
    )
    bob = Phone(options(cluster.pki, port, "bob", tmp_path, 880, duration=90.0), said)
    try:
        await alice.start()
        await bob.start()
        calling, answering = call(alice, bob)
        await said.until(lambda lines: sum(x.startswith("secure ") for x in lines) >= 2, STEP)
        [session] = await cluster.relay_sessions()

        cluster.kill("signaling")
        await said.until(
            lambda lines: sum(x.startswith("flow lost: reconnecting") for x in lines) >= 2, STEP
        )
        await cluster.start("signaling")
        for user in ("alice", "bob"):
            await said.until(
                lambda lines, user=user: (
                    f"registered sip:{user}@127.0.0.1 (flow recovered)" in lines
                ),
                STEP,
            )
        before = await _packets(cluster, session)
        await eventually(lambda: _more_than(cluster, session, before), 10, "media still flowing")
        assert await cluster.relay_sessions() == [session]
        assert session.split("#")[0] in await cluster.calls()

        hang_up.set()
        caller, callee = await calling, await answering
    finally:
        await alice.close()
        await bob.close()
    assert caller.secured is not None and callee.secured is not None
    assert "BYE answered 200" in said.lines, said.lines
    assert callee.ended_by_peer

    async def nothing_left() -> bool:
        return not await cluster.relay_sessions() and session.split("#")[0] not in (
            await cluster.calls()
        )

    await eventually(nothing_left, WITHIN, "the call's relay session and record gone")


async def _packets(cluster: Cluster, session: str) -> int:
    """Packets the relay received on both legs of ``session`` so far."""
    async with open_channel(cluster.address("relay"), cluster.grpc_tls) as channel:
        queried = await relay_pb2_grpc.RelayStub(channel).Query(
            relay_pb2.QueryRequest(call_id=session), timeout=5
        )
    return sum(leg.packets_in for leg in queried.legs)


async def _more_than(cluster: Cluster, session: str, before: int) -> bool:
    return await _packets(cluster, session) > before + 50
