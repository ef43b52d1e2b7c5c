"""Linphone ↔ Linphone through `quietwire up --relays 2`: the relay carrying their
secure call is SIGKILLed, then the relay it moved to is drained; each time the
platform re-INVITEs both toward the other relay (issue 15) and the call goes
on, with the same SAS and each hearing the other's tone through the new relay,
and ends by Alice's BYE."""

from __future__ import annotations

import asyncio
import os
import signal
import wave
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from quietwire.phone.audio import dominant_frequency, tone, write_wav
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.streams import stream_id
from quietwire.runtime.tls import TlsFiles

from tests.conftest import Platform, quietwire_env, run_quietwire, running_platform
from tests.interop.linphone import SAS, requires_linphone
from tests.interop.test_linphone import phones
from tests.support.wait import wait_until

pytestmark = [pytest.mark.interop, requires_linphone]

#: Seconds for the call to show on the other relay after the kill.
MOVED_WITHIN = 20
#: Packets each leg must bring to the new relay (Linphone sends 50 a second).
FLOWING = 100


@pytest.fixture
def two_relays(tmp_path: Path) -> Iterator[Platform]:
    with running_platform(tmp_path / "platform", up_args=("--relays", "2")) as platform:
        yield platform


def legs_in(platform: Platform, name: str, call_id: str) -> list[int]:
    """Packets relay ``name`` received on each leg of the call's audio (empty: not there)."""
    tls = TlsFiles(
        platform.state / "pki" / "grpc.pem", platform.state / "pki" / "grpc.key", platform.ca
    )

    async def query() -> list[int]:
        address = platform.status()["services"][name]["grpc"]
        async with open_channel(address, tls) as channel:
            try:
                reply = await relay_pb2_grpc.RelayStub(channel).Query(
                    relay_pb2.QueryRequest(call_id=stream_id(call_id, 0)), timeout=5
                )
            except grpc.aio.AioRpcError:  # NOT_FOUND, or the relay away
                return []
        return [leg.packets_in for leg in reply.legs]

    return asyncio.run(query())


def test_linphone_call_keeps_its_sas_through_a_relay_kill_and_a_drain(
    two_relays: Platform, tmp_path: Path
) -> None:
    """Killed: the call moves to the other relay. Then that relay is drained
    (``drain-relay --migrate``): the call moves back to the first one, restarted."""
    platform = two_relays
    alice, bob = phones(platform, tmp_path, platform.sip_port, platform.sip_port)
    try:
        for phone, hz in ((alice, 440), (bob, 880)):  # a tone each way, looped; what came
            write_wav(tmp_path / f"{phone.user}-play.wav", tone(hz, 2.0), 8000)
            phone.command(f"play {tmp_path / f'{phone.user}-play.wav'}")
            phone.command(f"record {tmp_path / f'{phone.user}-heard.wav'}")
        alice.registered()
        bob.registered()
        alice.command("call sip:bob@127.0.0.1")
        sas = alice.sas()
        assert bob.sas() == sas
        listed = platform.calls_showing("zrtp-verified")
        call_id = next(line.split()[0] for line in listed.splitlines() if "zrtp-verified" in line)
        carrier = next(n for n in ("relay", "relay-2") if legs_in(platform, n, call_id))
        other = next(n for n in ("relay", "relay-2") if n != carrier)
        marks = len(alice.lines), len(bob.lines)

        os.kill(platform.status()["services"][carrier]["pid"], signal.SIGKILL)
        moved_to(platform, other, call_id)

        grpc_port = platform.status()["services"][other]["grpc"].rsplit(":", 1)[1]
        drained = run_quietwire(
            *("--config", str(platform.config), "drain-relay", "--migrate", "--timeout", "30"),
            env=quietwire_env(QW_GRPC_PORT=grpc_port),
        )
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "migrated: 1 moved" in drained.stdout, drained.stdout
        moved_to(platform, carrier, call_id)  # restarted by `up`, under a new id

        for phone, mark in ((alice, marks[0]), (bob, marks[1])):
            assert phone.call_state() == "StreamsRunning"
            tokens = [m.group(1) for line in phone.lines[mark:] if (m := SAS.search(line))]
            assert set(tokens) <= {sas}, f"{phone.user}: a new SAS after the moves: {tokens}"
        alice.command("terminate")
        alice.wait_for(r"Call 1 with sip:bob@127\.0\.0\.1 ended")
        bob.wait_for(r"Call 1 with sip:alice@127\.0\.0\.1 ended")
    finally:
        alice.stop()
        bob.stop()
    # What each heard last (after the moves: FLOWING packets is two seconds) is the other's tone.
    assert abs(heard_last(tmp_path / "alice-heard.wav") - 880) <= 10
    assert abs(heard_last(tmp_path / "bob-heard.wav") - 440) <= 10


def moved_to(platform: Platform, name: str, call_id: str) -> None:
    """The call's record names relay ``name`` and both Linphones' media flows through it,
    and the call is still zrtp-verified."""
    relay_id = platform.status()["services"][name]["relay_id"]
    platform.calls_showing(f"relay={relay_id}", MOVED_WITHIN)
    wait_until(
        lambda: min(legs_in(platform, name, call_id) or [0]) >= FLOWING,
        MOVED_WITHIN,
        f"both Linphones' media through {name}",
        interval=0.3,
    )
    assert f"{call_id} zrtp zrtp-verified" in platform.quietwire("calls").stdout


def heard_last(path: Path, seconds: float = 1.0) -> float:
    """The dominant frequency of the last ``seconds`` of a recording."""
    with wave.open(str(path)) as wav:
        frames, rate = wav.readframes(wav.getnframes()), wav.getframerate()
    tail = frames[-int(seconds * rate) * 2 :]
    assert len(tail) == int(seconds * rate) * 2, "less audio than asked arrived"
    return dominant_frequency(tail, rate)
