"""Linphone (linphone-cli, bzrtp) through `quietwire up`: registration over TLS with
certificate verification, a call with ZRTP mandatory, the same SAS on both sides,
BYE ending it on both; and the same with the two phones on two replicas."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Platform, free_port, port_open, quietwire_env
from tests.interop.linphone import Linphone, requires_linphone
from tests.support.wait import wait_until

pytestmark = [pytest.mark.interop, requires_linphone]


@pytest.fixture
def second_replica(platform: Platform) -> Iterator[int]:
    """Another signaling replica on the same Redis, with its own SIP port."""
    port = free_port()
    env = quietwire_env(QW_SIP_PORT=str(port), QW_GRPC_PORT="0", QW_REPLICA_ID="replica-two")
    process = subprocess.Popen(
        [sys.executable, "-m", "quietwire", "--config", str(platform.config), "signaling"],
        env=env,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        assert process.poll() is None, "replica two exited"
        return port_open(port)

    try:
        wait_until(listening, 20, "replica two listening")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def phones(
    platform: Platform,
    tmp_path: Path,
    alice_port: int,
    bob_port: int,
    *,
    auto_answer: bool = True,
    bob_sip: dict[str, str] | None = None,
) -> tuple[Linphone, Linphone]:
    """alice's and bob's Linphones (bob answers at once unless ``auto_answer`` is
    off; ``bob_sip``: more [sip] settings for him)."""
    base = free_port()
    alice = Linphone(
        tmp_path / "alice",
        "alice",
        platform.users["alice"],
        alice_port,
        platform.ca,
        tls_port=free_port(),
        rtp_port=base - base % 2,
    )
    bob = Linphone(
        tmp_path / "bob",
        "bob",
        platform.users["bob"],
        bob_port,
        platform.ca,
        tls_port=free_port(),
        rtp_port=(base - base % 2) + 100,
        auto_answer=auto_answer,
        sip_extra=bob_sip,
    )
    return alice, bob


def secure_call(alice: Linphone, bob: Linphone, platform: Platform) -> None:
    alice.registered()
    bob.registered()
    alice.command("call sip:bob@127.0.0.1")
    sas_alice, sas_bob = alice.sas(), bob.sas()
    assert sas_alice == sas_bob
    assert len(sas_alice) == 4
    # keyagreement, from what the relay saw, calls it verified
    assert " zrtp zrtp-verified" in platform.calls_showing("zrtp-verified")
    assert alice.call_state() == "StreamsRunning"
    assert bob.call_state() == "StreamsRunning"
    alice.command("terminate")
    alice.wait_for(r"Call 1 with sip:bob@127\.0\.0\.1 ended")
    bob.wait_for(r"Call 1 with sip:alice@127\.0\.0\.1 ended")


def test_linphone_call_through_quietwire(platform: Platform, tmp_path: Path) -> None:
    alice, bob = phones(platform, tmp_path, platform.sip_port, platform.sip_port)
    try:
        secure_call(alice, bob, platform)
    finally:
        alice.stop()
        bob.stop()


def test_linphone_call_across_replicas(
    platform: Platform, second_replica: int, tmp_path: Path
) -> None:
    alice, bob = phones(platform, tmp_path, platform.sip_port, second_replica)
    try:
        secure_call(alice, bob, platform)
    finally:
        alice.stop()
        bob.stop()


def test_linphone_early_media_through_quietwire(platform: Platform, tmp_path: Path) -> None:
    """bob's Linphone sends early media (a 183 with its SDP, RFC 3960) before it
    answers: keyagreement plans that early answer like a 2xx's, so ZRTP runs
    between the phones through the relay while it rings (same SAS, the binding
    verified), and the call goes on once bob answers."""
    early_media = {"incoming_calls_early_media": "1"}
    alice, bob = phones(
        platform,
        tmp_path,
        platform.sip_port,
        platform.sip_port,
        auto_answer=False,
        bob_sip=early_media,
    )
    try:
        alice.registered()
        bob.registered()
        alice.command("call sip:bob@127.0.0.1")
        bob.wait_for(r"Receiving new incoming call")
        # ZRTP runs over the early media, through the relay, before bob answers.
        assert alice.sas() == bob.sas()
        assert " zrtp zrtp-verified" in platform.calls_showing("zrtp-verified")
        bob.command("answer")
        wait_until(lambda: alice.call_state() == "StreamsRunning", 20, "alice's call running")
        alice.command("terminate")
        alice.wait_for(r"Call 1 with sip:bob@127\.0\.0\.1 ended")
    finally:
        alice.stop()
        bob.stop()
