"""Linphone takes a move (issue 15): our phone calls Linphone through `quietwire
up`; once ZRTP is secure, MoveCall re-INVITEs both toward new media addresses
(a forwarder standing in for the new relay: tests/support/forwarder.py).
Linphone answers 200 (twice: a second move in place), its SRTP goes on through
the new path both ways without a new key agreement, and our phone's BYE
afterwards is taken (renumbered above the platform's re-INVITEs as our phone;
Linphone does not insist, the numbers are checked in tests/faults/test_move_call.py)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from quietwire.phone.audio import tone, write_wav
from quietwire.protocols.rtp.demux import PacketKind
from quietwire.rpc.signaling.v1 import signaling_pb2, signaling_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.tls import TlsFiles

from tests.conftest import Platform
from tests.interop.conftest import phone_process
from tests.interop.linphone import SAS, on_platform, requires_linphone
from tests.interop.test_phone_linphone import heard
from tests.support.forwarder import forwarder
from tests.support.wait import eventually, wait_until

pytestmark = [pytest.mark.interop, requires_linphone]
#: Packets each way through the new path (2 s of audio).
PACKETS = 100
#: Seconds our phone talks once secure, then hangs up (the move and PACKETS fit).
DURATION = 8


def call_id_of(platform: Platform) -> str:
    """The one established call's Call-ID (its dialog record)."""
    client = platform.redis()
    try:
        keys = [k.decode() for k in client.keys("qw:dialog:*") if not k.endswith(b":legs")]
    finally:
        client.close()
    return keys[0].split("{", 1)[1].rstrip("}") if len(keys) == 1 else ""


async def test_linphone_accepts_the_move_and_keeps_its_srtp_session(
    platform: Platform, tmp_path: Path
) -> None:
    linphone = on_platform(platform, tmp_path / "linphone", "alice", auto_answer=True)
    ours: subprocess.Popen[str] | None = None
    play = tmp_path / "linphone-440.wav"
    write_wav(play, tone(440, 2.0), 8000)
    try:
        linphone.command(f"play {play}")  # without a source Linphone sends no RTP at all
        await asyncio.to_thread(linphone.registered)
        ours = phone_process(
            platform,
            "bob",
            *("call", "sip:alice@127.0.0.1", "--duration", str(DURATION)),
            *("--zid-cache", str(tmp_path / "bob-zid.json")),
            *("--record", str(tmp_path / "phone-heard.wav")),
        )
        await asyncio.to_thread(linphone.sas)
        call_id = await asyncio.to_thread(
            wait_until, lambda: call_id_of(platform), 10, "the call's dialog recorded"
        )
        pki = platform.state / "pki"
        tls = TlsFiles(pki / "grpc.pem", pki / "grpc.key", platform.ca)
        signaling = platform.status()["services"]["signaling"]["grpc"]
        async with forwarder() as relay:
            # Moved twice (the second time in place, its o= version raised again).
            async with open_channel(signaling, tls) as channel:
                for _ in range(2):
                    result = await signaling_pb2_grpc.SignalingStub(channel).MoveCall(
                        signaling_pb2.MoveCallRequest(call_id=call_id, media=relay.plan()),
                        timeout=30,
                    )
                    assert result.outcome == signaling_pb2.MoveCallResponse.OUTCOME_MOVED, result
            assert result.callee_media and result.callee_media[0].zrtp_hash.startswith("1.10 ")

            async def both_ways() -> bool:
                return all(relay.forwarded(side) >= PACKETS for side in ("caller", "callee"))

            await eventually(both_ways, 15, lambda: f"SRTP both ways: {relay.counts}")
            assert relay.forwarded("callee", PacketKind.ZRTP) == 0  # no new key agreement
            assert await asyncio.to_thread(linphone.call_state) == "StreamsRunning"
            assert sum(bool(SAS.search(line)) for line in linphone.lines) == 1
            out, _ = await asyncio.to_thread(ours.communicate, timeout=30)
        assert ours.returncode == 0, out
        assert "media moved to 127.0.0.1:" in out
        assert "call ended" in out
        assert "BYE answered 200" in out, out
        # What our phone heard past its first second came through the new path
        # (the move was at once): Linphone's tone, decrypted in the same session.
        assert abs(heard(tmp_path / "phone-heard.wav") - 440) <= 10
    finally:
        if ours is not None and ours.poll() is None:
            ours.kill()
            ours.wait()
        await asyncio.to_thread(linphone.stop)
