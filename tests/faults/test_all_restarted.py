"""Every service stopped during a call and started again on the same Redis: the
dead call is not listed as active, its dialog is closed, and its relay holds
nothing — no ghost survives the restart."""

from __future__ import annotations

import redis.asyncio as redis
from quietwire.signaling.dialogs import DIALOG_KEY

from tests.faults.cluster import Cluster, established
from tests.support.wait import eventually

#: Seconds after the last service is back by which the ghost must be gone.
WITHIN = 10


async def test_no_ghost_call_after_every_service_restarted(cluster: Cluster) -> None:
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        invite, _ = await established(alice, bob)
        assert invite.call_id in await cluster.calls()
    finally:
        await alice.close()
        await bob.close()

    for name in reversed(cluster.names):
        cluster.stop(name)
    for name in cluster.names:
        await cluster.start(name)

    store = redis.from_url(cluster.redis.url)
    try:

        async def no_ghost() -> bool:
            dialog = await store.exists(DIALOG_KEY.format(call_id=invite.call_id))
            return not dialog and invite.call_id not in await cluster.calls()

        await eventually(no_ghost, WITHIN, "the dead call and its dialog gone")
    finally:
        await store.aclose()
    assert not await cluster.relay_sessions()
