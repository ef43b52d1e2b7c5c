"""A call whose media stopped while keyagreement was away: the relay reclaimed its
session (media timeout) and told nobody; when keyagreement returns it finds the
record without its session and ends the call — a BYE with a Reason to each phone
— instead of listing it as active for the record's hours-long lifetime."""

from __future__ import annotations

from pathlib import Path

from tests.faults.cluster import cluster_files, established, start_all
from tests.integration.signaling_harness import next_request
from tests.support.wait import eventually

#: The relay's media timeout here: our test phones send no media, so the relay
#: reclaims the call this long after it was allocated.
MEDIA_TIMEOUT = "5"
#: Seconds after keyagreement's return by which both phones heard the BYE.
WITHIN = 10


async def test_a_call_whose_media_died_while_keyagreement_was_away_is_ended(
    tmp_path: Path,
) -> None:
    with cluster_files(tmp_path) as files:
        cluster = await start_all(files, QW_RELAY_MEDIA_TIMEOUT=MEDIA_TIMEOUT)
        alice, bob = await cluster.agent("alice"), await cluster.agent("bob")
        try:
            assert (await alice.register()).status == 200
            invite, _ = await established(alice, bob)
            cluster.kill("keyagreement")

            async def reclaimed() -> bool:
                return not await cluster.relay_sessions()

            await eventually(reclaimed, 20, "the relay's media timeout reclaiming the call")
            await cluster.start("keyagreement")

            for phone in (alice, bob):
                bye = await next_request(phone, "BYE", timeout=WITHIN)
                assert bye.call_id == invite.call_id
                assert "media gone" in (bye.headers.get("Reason") or "")
                await phone.connection.send(phone.answer(bye, 200, "OK"))

            async def gone() -> bool:
                return invite.call_id not in await cluster.calls()

            await eventually(gone, WITHIN, "the dead call gone from `quietwire calls`")
        finally:
            await alice.close()
            await bob.close()
