"""Two keyagreement replicas reconcile the same dead call at once (the relay
restarted empty under it): the phones hear one BYE each, not one per replica."""

from __future__ import annotations

import pytest

from tests.faults.cluster import Cluster, established
from tests.integration.signaling_harness import next_request
from tests.support.wait import eventually

#: Seconds after the relay's return by which both phones heard the BYE.
WITHIN = 10
#: Seconds a second BYE would have had to arrive (both replicas act within a tick).
QUIET = 3


async def test_two_replicas_end_a_dead_call_once(cluster: Cluster) -> None:
    await cluster.start("keyagreement-2")
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        assert (await alice.register()).status == 200
        invite, _ = await established(alice, bob)

        await cluster.restart("relay")

        for phone in (alice, bob):
            bye = await next_request(phone, "BYE", timeout=WITHIN)
            assert bye.call_id == invite.call_id
            await phone.connection.send(phone.answer(bye, 200, "OK"))
        for phone in (alice, bob):
            with pytest.raises(TimeoutError):
                await next_request(phone, "BYE", timeout=QUIET)

        async def gone() -> bool:
            return invite.call_id not in await cluster.calls()

        await eventually(gone, WITHIN, "the dead call gone from `quietwire calls`")
        logs = [cluster.log_lines(name) for name in ("keyagreement", "keyagreement-2")]
        assert all(
            any(line["msg"] == "relay appeared: reconciling" for line in lines) for lines in logs
        ), "both replicas reconciled the relay's return"
    finally:
        await alice.close()
        await bob.close()
