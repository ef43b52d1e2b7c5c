"""The relay killed mid-call and back at once, empty, where keyagreement knows it:
the call it carried is dead (its ports are gone), so the platform ends it — a BYE
with a Reason to each phone — and ``quietwire calls`` stops listing it. Whether
the relay comes back under a new name or under its own (a pod's container
restarted: same name, same address, back before its registry entry expired).
And a call placed the moment the relay is back is carried by it, though
keyagreement's connection to that address is still waiting out its backoff."""

from __future__ import annotations

from pathlib import Path

from tests.faults.cluster import Cluster, cluster_files, established, start_all
from tests.integration.signaling_harness import next_request
from tests.support.wait import eventually

#: Seconds after the relay's return by which both phones heard the BYE.
WITHIN = 10
RELAY_ID = "relay-on-node-1"


async def test_a_call_on_a_relay_restarted_under_a_new_name_is_ended(cluster: Cluster) -> None:
    await ends_with_a_reason(cluster)


async def test_a_call_on_a_relay_restarted_under_its_own_name_is_ended(tmp_path: Path) -> None:
    with cluster_files(tmp_path) as files:
        cluster = await start_all(files, QW_RELAY_ID=RELAY_ID)
        await ends_with_a_reason(cluster, QW_RELAY_ID=RELAY_ID)


async def test_a_call_placed_as_the_relay_returns_is_carried(tmp_path: Path) -> None:
    with cluster_files(tmp_path) as files:
        cluster = await start_all(files, QW_RELAY_ID=RELAY_ID)
        alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
        try:
            assert (await alice.register()).status == 200
            cluster.kill("relay")

            async def noticed() -> bool:  # its address refused connections for a second
                lines = cluster.log_lines("keyagreement")
                return any(line["msg"] == "relay lost" for line in lines)

            await eventually(noticed, WITHIN, "keyagreement noticing the relay's loss")
            await cluster.start("relay", QW_RELAY_ID=RELAY_ID)
            again, _ = await established(alice, bob, 40010)
            assert await cluster.relay_sessions() == [f"{again.call_id}#0"]
        finally:
            await alice.close()
            await bob.close()


async def ends_with_a_reason(cluster: Cluster, **relay: str) -> None:
    """A call, the relay restarted (with ``relay`` settings) under it: the call ended."""
    alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
    try:
        assert (await alice.register()).status == 200
        invite, _ = await established(alice, bob)
        assert invite.call_id in await cluster.calls()

        await cluster.restart("relay", **relay)
        assert not await cluster.relay_sessions()

        for phone in (alice, bob):
            bye = await next_request(phone, "BYE", timeout=WITHIN)
            assert bye.call_id == invite.call_id
            assert "relay lost" in (bye.headers.get("Reason") or "")
            await phone.connection.send(phone.answer(bye, 200, "OK"))

        async def gone() -> bool:
            return invite.call_id not in await cluster.calls()

        await eventually(gone, WITHIN, "the dead call gone from `quietwire calls`")
        again, _ = await established(alice, bob, 40010)
        assert await cluster.relay_sessions() == [f"{again.call_id}#0"]
    finally:
        await alice.close()
        await bob.close()
