"""One call, followed across the three services of `quietwire up`: every
service's log lines about it carry its Call-ID (`call_id`), from the INVITE
routed by signaling through the relay's latch, ZRTP observation and media
timeout to the BYEs the platform sends; and `quietwire calls CALL_ID` names
the replica and relay that handled it and a command that pulls those lines."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import subprocess
from pathlib import Path

from tests.conftest import Platform, agent
from tests.integration.signaling_harness import establish, next_request
from tests.integration.test_relay_sessions import HELLO, HELLO_HASH
from tests.interop.test_relay_calls import sdp
from tests.support.platforms import log_lines, logged_platform, up_log

SDP = "application/sdp"
#: Seconds without media before the relay reclaims the call (and the platform hangs up).
MEDIA_TIMEOUT = "3"


def record(platform: Platform, call_id: str) -> dict[str, str]:
    """The call's record in Redis, as keyagreement wrote it."""
    client = platform.redis()
    try:
        raw = client.hgetall(f"qw:call:v2:{{{call_id}}}")
    finally:
        client.close()
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_calls_lines_in_every_service_carry_its_call_id(tmp_path: Path) -> None:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # alice's media socket
    phone.bind(("127.0.0.1", 0))
    offer = sdp("alice", phone.getsockname()[1], True).replace(
        ("1.10 " + "cd" * 32).encode(), HELLO_HASH.encode()
    )
    with phone, logged_platform(tmp_path, QW_RELAY_MEDIA_TIMEOUT=MEDIA_TIMEOUT) as platform:
        logs = up_log(platform)
        alice, bob = await agent(platform, "alice"), await agent(platform, "bob")
        try:
            assert (await bob.register()).status == 200
            invite = alice.build("INVITE", "sip:bob@127.0.0.1", body=offer, content_type=SDP)
            await establish(alice, bob, invite, sdp("bob", 40002, True))
            call_id = invite.call_id
            stored = record(platform, call_id)
            shown = await asyncio.to_thread(platform.quietwire, "calls", call_id)
            assert shown.returncode == 0, shown.stderr
            assert f"signaling replica: {stored['replica']} " in shown.stdout, shown.stdout
            assert f"relay: {stored['relay_id']}\n" in shown.stdout, shown.stdout
            keep = f"jq -c --arg id {shlex.quote(call_id)} 'select(.call_id == $id)'"
            assert f"  {keep} {shlex.quote(str(logs))}\n" in shown.stdout, shown.stdout

            # Alice's Hello reaches the relay from her SDP address: the relay latches
            # her leg and sees the Hello; then nothing more, so the media times out.
            toward_alice = int(stored["streams"].split()[1])
            phone.sendto(HELLO, ("127.0.0.1", toward_alice))
            for ua in (alice, bob):
                bye = await next_request(ua, "BYE", timeout=30)
                assert "media timeout" in (bye.headers.get("Reason") or "")
                await ua.connection.send(ua.answer(bye, 200, "OK"))
        finally:
            await alice.close()
            await bob.close()
    # The platform has stopped: every line is written.
    entries = log_lines(platform)
    ours = [e for e in entries if e.get("call_id") == call_id]
    said = {(e["service"], e["msg"]) for e in ours}
    assert {
        ("signaling", "call routed"),
        ("keyagreement", "call planned"),
        ("relay", "call allocated"),
        ("relay", "leg latched"),
        ("relay", "zrtp message seen"),
        ("keyagreement", "zrtp outcome"),
        ("relay", "leg timed out"),
        ("relay", "call reclaimed by media timeout"),
        ("signaling", "call terminated"),
        ("keyagreement", "call ended"),
    } <= said, said
    [routed] = [e for e in ours if e["msg"] == "call routed"]
    assert routed["callee_replicas"] == [stored["replica"]]  # one replica under `up`
    # Every line that names the call carries it as call_id.
    naming = [e for e in entries if call_id in json.dumps(e)]
    assert all(e.get("call_id") == call_id for e in naming), [
        e for e in naming if e.get("call_id") != call_id
    ]
    # The command `quietwire calls` gave pulls exactly these lines.
    pulled = subprocess.run(
        [*shlex.split(keep), str(logs)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [json.loads(line) for line in pulled] == ours
