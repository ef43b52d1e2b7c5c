"""One call, followed across the three services of `quietwire up`: every
service's log lines about it carry its Call-ID (`call_id`), from the INVITE
routed by signaling to the relay sessions released at BYE."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import agent, running_platform
from tests.integration.signaling_harness import establish, next_request
from tests.interop.test_relay_calls import sdp

SDP = "application/sdp"


async def test_a_calls_lines_in_every_service_carry_its_call_id(tmp_path: Path) -> None:
    logs = tmp_path / "services.log"
    with logs.open("w") as stderr, running_platform(tmp_path, stderr=stderr) as platform:
        alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
        try:
            assert (await bob.register()).status == 200
            invite = alice.build(
                "INVITE", "sip:bob@127.0.0.1", body=sdp("alice", 40000, True), content_type=SDP
            )
            caller, _ = await establish(alice, bob, invite, sdp("bob", 40002, True))
            hanging_up = asyncio.create_task(alice.send(alice.in_dialog(caller, "BYE")))
            await bob.connection.send(bob.answer(await next_request(bob, "BYE"), 200, "OK"))
            final = (await hanging_up).final
            assert final is not None and final.status == 200
        finally:
            await alice.close()
            await bob.close()
    # The platform has stopped: every line is written.
    entries = [json.loads(line) for line in logs.read_text().splitlines() if line.startswith("{")]
    ours = [e for e in entries if e.get("call_id") == invite.call_id]
    said = {(e["service"], e["msg"]) for e in ours}
    assert {
        ("signaling", "call routed"),
        ("keyagreement", "call planned"),
        ("relay", "call allocated"),
        ("keyagreement", "call ended"),
        ("relay", "call released"),
    } <= said, said
