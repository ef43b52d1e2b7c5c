"""A call hung up while keyagreement is down: when keyagreement returns, the call
ends at once (relay ports freed, gone from ``quietwire calls``), not when the
relay's media timeout finally notices."""

from __future__ import annotations

import asyncio

from tests.faults.cluster import Cluster, established
from tests.integration.signaling_harness import next_request
from tests.support.wait import eventually

#: Seconds after keyagreement's return by which the call must be gone (the relay's
#: media timeout, the old way out, is 60).
WITHIN = 8


async def test_a_call_hung_up_while_keyagreement_is_away_ends_on_its_return(
    cluster: Cluster,
) -> None:
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        invite, caller = await established(alice, bob)
        assert invite.call_id in await cluster.calls()
        assert len(await cluster.relay_sessions()) == 1

        cluster.kill("keyagreement")
        hanging_up = asyncio.create_task(alice.send(alice.in_dialog(caller, "BYE")))
        await bob.connection.send(bob.answer(await next_request(bob, "BYE"), 200, "OK"))
        final = (await hanging_up).final
        assert final is not None and final.status == 200
        await cluster.start("keyagreement")

        async def gone() -> bool:
            return invite.call_id not in await cluster.calls()

        await eventually(gone, WITHIN, "the hung-up call gone from `quietwire calls`")
        await eventually(lambda: _empty(cluster), WITHIN, "the relay's session for it released")
    finally:
        await alice.close()
        await bob.close()


async def _empty(cluster: Cluster) -> bool:
    return not await cluster.relay_sessions()
