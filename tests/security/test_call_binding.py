"""Issue 12 finding 6: a call's media plan is bound to its dialog, not to its Call-ID.

A registered user who learns another call's Call-ID (it is not a secret: it is
logged, and phones reuse patterns) sends requests that reuse it. Against a real
``quietwire up`` (TLS signaling, keyagreement, relay, Redis): the requests are
refused or change nothing, and the other call's relay session and security
record stay as they were.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from quietwire.phone.useragent import UserAgent
from quietwire.relay.settings import RelaySettings
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.registry import RelayRegistry
from quietwire.runtime.settings import load_settings

from tests.conftest import Platform, agent, run_quietwire, running_platform
from tests.integration.signaling_harness import establish
from tests.interop.test_relay_calls import sdp
from tests.support.relay import relay_session

SDP = "application/sdp"
DOMAIN = "127.0.0.1"
CAROL_PASSWORD = "carol-secret-for-this-test"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`quietwire up` with a third user, carol (demo users: alice and bob)."""
    with running_platform(tmp_path_factory.mktemp("binding")) as up:
        added = run_quietwire(
            "--config",
            str(up.config),
            "user",
            "add",
            "carol",
            "--password-stdin",
            stdin=CAROL_PASSWORD,
        )
        assert added.returncode == 0, added.stderr
        yield up


def offer(user: str, port: int) -> bytes:
    return sdp(user, port, zrtp=True)


@dataclass
class Relay:
    """The platform's relay, asked over its gRPC API (mTLS) about one call's session."""

    stub: relay_pb2_grpc.RelayAsyncStub

    async def session(self, call_id: str) -> relay_pb2.QueryResponse | None:
        return await relay_session(self.stub, call_id)


@pytest.fixture
async def relay(platform: Platform) -> AsyncIterator[Relay]:
    settings = load_settings(RelaySettings, platform.config)
    client = redis_client(settings)
    try:
        [entry] = await RelayRegistry(client).alive()
    finally:
        await client.aclose()
    async with open_channel(entry.grpc, settings.grpc_tls) as channel:
        yield Relay(relay_pb2_grpc.RelayStub(channel))


def security(platform: Platform, call_id: str) -> str:
    shown = run_quietwire("--config", str(platform.config), "calls", call_id)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@dataclass
class Call:
    call_id: str
    carol: UserAgent
    bob: UserAgent


@pytest.fixture
async def call(platform: Platform) -> AsyncIterator[Call]:
    """carol calls bob; bob answers; the call is established (ACKed)."""
    carol = await agent(platform, "carol", CAROL_PASSWORD)
    bob = await agent(platform, "bob", platform.users["bob"])
    try:
        assert (await bob.register()).status == 200
        invite = carol.build(
            "INVITE", f"sip:bob@{DOMAIN}", body=offer("carol", 40000), content_type=SDP
        )
        await establish(carol, bob, invite, offer("bob", 40002))
        yield Call(invite.call_id, carol, bob)
    finally:
        await carol.close()
        await bob.close()


async def attack(platform: Platform, call_id: str, body: bytes) -> int:
    """alice (registered elsewhere, not reachable now) INVITEs herself on ``call_id``."""
    alice = await agent(platform, "alice", platform.users["alice"])
    try:
        invite = alice.build(
            "INVITE",
            f"sip:alice@{DOMAIN}",
            call_id=call_id,
            body=body,
            content_type=SDP if body else None,
        )
        exchange = await alice.send(invite)
        assert exchange.final is not None
        return exchange.final.status
    finally:
        await alice.close()


async def test_an_invite_reusing_a_planned_call_id_is_refused(
    platform: Platform, relay: Relay, call: Call
) -> None:
    before = await relay.session(call.call_id)
    assert before is not None
    shown = security(platform, call.call_id)

    assert await attack(platform, call.call_id, offer("alice", 40004)) == 403

    assert await relay.session(call.call_id) == before  # carol's media path untouched
    assert security(platform, call.call_id) == shown
    assert call.bob.requests.empty() and call.carol.requests.empty()  # no BYE, no re-INVITE


async def test_a_failed_invite_reusing_a_call_id_does_not_end_that_call(
    platform: Platform, relay: Relay, call: Call
) -> None:
    """Without SDP (an offer left for the 2xx), the INVITE is not planned; alice is
    not reachable, so it fails with 480, and the failure's EndCall names alice's
    dialog, not carol's: carol's call keeps its relay session and record."""
    before = await relay.session(call.call_id)
    assert before is not None
    shown = security(platform, call.call_id)

    assert await attack(platform, call.call_id, b"") == 480

    assert await relay.session(call.call_id) == before
    assert security(platform, call.call_id) == shown
