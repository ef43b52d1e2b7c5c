"""The binding checker on relay events, with its call records in a real Redis:
what it records, and which calls it ends (once each)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from quietwire.keyagreement.binding import BindingChecker
from quietwire.keyagreement.calls import CALL_KEY, CALL_TTL, ENDED_TTL, CallStore
from quietwire.keyagreement.planner import RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.registry import RelayRegistry

from tests.conftest import free_port, quietwire_env
from tests.support.wait import eventually

Event = relay_pb2.MediaEvent
HELLO = b"Hello   1.10the caller's Hello message"


class Hangups:
    """Records the calls the checker asks to end (what TerminateCall would receive)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, call_id: str, reason: str, replica: str) -> bool:
        self.calls.append((call_id, reason))
        return True


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[CallStore]:
    client = redis.Redis.from_url(redis_url)
    yield CallStore(client)
    await client.aclose()


def checker(store: CallStore, hangups: Hangups) -> BindingChecker:
    return BindingChecker(store, RelayRegistry(store.redis), RelayClients(None), hangups)


async def a_call(store: CallStore, call_id: str, policy: Policy = Policy.SECURE_ONLY) -> None:
    signaled = hashlib.sha256(HELLO).hexdigest()
    await store.put(
        call_id,
        {
            "hash_caller": f"1.10 {signaled}",
            "state": int(pb.ZRTP_STATE_WAITING),
            "plan": "",
            "policy": policy.value,
        },
    )


def zrtp(call_id: str, message: str, hello: bytes = b"") -> relay_pb2.MediaEvent:
    return Event(
        call_id=f"{call_id}#0",
        side=relay_pb2.LEG_SIDE_CALLER,
        kind=Event.KIND_ZRTP_MESSAGE,
        zrtp_message=message,
        zrtp_hello_hash=hashlib.sha256(hello).hexdigest() if hello else "",
    )


async def test_mismatching_hello_ends_the_call(store: CallStore) -> None:
    hangups = Hangups()
    await a_call(store, "good")
    await a_call(store, "bad")
    binding = checker(store, hangups)
    await binding.observe(zrtp("good", "Hello", HELLO))
    await binding.observe(zrtp("bad", "Hello", HELLO + b" changed by a man in the middle"))
    await binding.observe(zrtp("bad", "Hello", HELLO + b" changed by a man in the middle"))
    assert hangups.calls == [("bad", "zrtp-mismatch")]
    good, bad = await store.get("good"), await store.get("bad")
    assert good is not None and good.state == pb.ZRTP_STATE_HANDSHAKING
    assert bad is not None and bad.state == pb.ZRTP_STATE_BINDING_MISMATCH


async def test_media_timeout_ends_the_call_once(store: CallStore) -> None:
    hangups = Hangups()
    await a_call(store, "dead")
    binding = checker(store, hangups)
    for side in (relay_pb2.LEG_SIDE_CALLER, relay_pb2.LEG_SIDE_CALLEE):
        await binding.observe(Event(call_id="dead#0", side=side, kind=Event.KIND_MEDIA_TIMEOUT))
    await binding.observe(Event(call_id="unknown#0", kind=Event.KIND_MEDIA_TIMEOUT))
    assert hangups.calls == [("dead", "media timeout")]


@pytest.mark.parametrize("policy", list(Policy))
async def test_goclear_ends_the_call_unless_plain_is_allowed(
    store: CallStore, policy: Policy
) -> None:
    hangups = Hangups()
    await a_call(store, "clear", policy)
    await checker(store, hangups).observe(zrtp("clear", "GoClear"))
    record = await store.get("clear")
    assert record is not None and record.state == pb.ZRTP_STATE_CLEAR
    allowed = policy is Policy.ALLOW_PLAIN
    assert hangups.calls == ([] if allowed else [("clear", "GoClear refused by policy")])


async def test_a_lost_relay_ends_its_calls(store: CallStore, redis_url: str) -> None:
    """A relay process killed: once it is gone from the registry and its event
    stream broke, the calls it carried end; a late heartbeat alone ends nothing."""
    grpc_port, low = free_port(), free_port() & ~1
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_GRPC_PORT=str(grpc_port),
        QW_RELAY_ID="relay-a",
        QW_RELAY_PORT_MIN=str(low),
        QW_RELAY_PORT_MAX=str(low + 7),
    )
    relay = subprocess.Popen([sys.executable, "-m", "quietwire", "relay"], env=env)
    hangups = Hangups()
    binding = checker(store, hangups)
    try:
        registry = RelayRegistry(store.redis)
        await eventually(registry.alive, 15, "the relay registered", interval=0.1)
        await a_call(store, "on-a")
        await a_call(store, "elsewhere")
        await store.put("on-a", {"relay_id": "relay-a"})
        await store.put("elsewhere", {"relay_id": "relay-b"})
        await binding.discover()

        await registry.leave("relay-a")  # a heartbeat late, but the relay still streams
        await binding.discover()
        assert hangups.calls == []

        relay.kill()
        relay.wait(10)
        stream = binding._streams[f"127.0.0.1:{grpc_port}"]
        async with asyncio.timeout(15):
            await asyncio.wait({stream})
        await registry.leave("relay-a")  # what its heartbeat's TTL does a few seconds later
        await binding.discover()
        await binding.discover()
        assert hangups.calls == [("on-a", "relay lost")]
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(10)
        await binding.close()


async def test_media_reports_keep_a_long_call_on_record(store: CallStore) -> None:
    """The relay's LEG_STATS renew a live call's record (calls outlast CALL_TTL);
    an ended call's record is left to expire."""
    binding = checker(store, Hangups())
    await a_call(store, "long")
    key = CALL_KEY.format(call_id="long")
    await store.redis.expire(key, 10)
    stats = Event(call_id="long#0", side=relay_pb2.LEG_SIDE_CALLER, kind=Event.KIND_LEG_STATS)
    await binding.observe(stats)
    assert await store.redis.ttl(key) > CALL_TTL - 60
    await store.put("long", {"detail": "ended"}, ttl=ENDED_TTL)
    await binding.observe(stats)
    assert await store.redis.ttl(key) <= ENDED_TTL
