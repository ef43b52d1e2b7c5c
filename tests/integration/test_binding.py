"""The binding checker on relay events, with its call records in a real Redis:
what it records, and which calls it ends (once each)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from quietwire.keyagreement import binding as binding_module
from quietwire.keyagreement import calls as calls_module
from quietwire.keyagreement.binding import BindingChecker
from quietwire.keyagreement.calls import CALL_TTL, ENDED_TTL, CallRecord, CallStore
from quietwire.keyagreement.model import Dialog, Mode, Plan, Relay
from quietwire.keyagreement.outcome import Outcome
from quietwire.keyagreement.planner import RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.rpc.relay.v1 import relay_pb2
from quietwire.runtime.errorlog import LOOP_ERRORS
from quietwire.runtime.registry import RelayEntry, RelayRegistry
from quietwire.runtime.streams import stream_id

from tests.conftest import free_port, quietwire_env, start_service
from tests.support.relay import relay_process
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


async def a_call(
    store: CallStore, call_id: str, policy: Policy = Policy.SECURE_ONLY, relay_id: str = "relay-a"
) -> None:
    signaled = hashlib.sha256(HELLO).hexdigest()
    record = CallRecord(
        call_id=call_id,
        dialog=Dialog("sip:alice@example.org", "sip:bob@example.org", "from-tag"),
        policy=policy,
        mode=Mode.ZRTP,
        end_to_end=True,
        plan=Plan(Mode.ZRTP, True, Relay(relay_id, "127.0.0.1:1"), ()),
        hash_caller=f"1.10 {signaled}",
    )
    assert await store.create(record) is not None


def zrtp(
    call_id: str, message: str, hello: bytes = b"", side: int = relay_pb2.LEG_SIDE_CALLER
) -> relay_pb2.MediaEvent:
    return Event(
        call_id=stream_id(call_id, 0),
        side=relay_pb2.LegSide.ValueType(side),
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
    assert good is not None and good.binding.outcome is Outcome.HANDSHAKING
    assert bad is not None and bad.binding.outcome is Outcome.MISMATCH


async def test_media_timeout_ends_the_call_once(store: CallStore) -> None:
    hangups = Hangups()
    await a_call(store, "dead")
    binding = checker(store, hangups)
    for side in (relay_pb2.LEG_SIDE_CALLER, relay_pb2.LEG_SIDE_CALLEE):
        timeout = Event(call_id=stream_id("dead", 0), side=side, kind=Event.KIND_MEDIA_TIMEOUT)
        await binding.observe(timeout)
    await binding.observe(Event(call_id=stream_id("unknown", 0), kind=Event.KIND_MEDIA_TIMEOUT))
    assert hangups.calls == [("dead", "media timeout")]


@pytest.mark.parametrize("policy", list(Policy))
async def test_goclear_ends_the_call_unless_plain_is_allowed(
    store: CallStore, policy: Policy
) -> None:
    hangups = Hangups()
    await a_call(store, "clear", policy)
    await checker(store, hangups).observe(zrtp("clear", "GoClear"))
    record = await store.get("clear")
    assert record is not None and record.binding.outcome is Outcome.CLEAR
    allowed = policy is Policy.ALLOW_PLAIN
    assert hangups.calls == ([] if allowed else [("clear", "GoClear refused by policy")])


async def test_a_lost_relay_ends_its_calls(store: CallStore, redis_url: str) -> None:
    """A relay process killed: once it is gone from the registry and its event
    stream broke, the calls it carried end; a late heartbeat alone ends nothing."""
    low = free_port() & ~1
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_RELAY_ID="relay-a",
        QW_RELAY_PORT_MIN=str(low),
        QW_RELAY_PORT_MAX=str(low + 7),
    )
    started = await asyncio.to_thread(start_service, "relay", env)
    relay, grpc_port = started.process, started.grpc_port
    hangups = Hangups()
    binding = checker(store, hangups)
    try:
        registry = RelayRegistry(store.redis)
        await eventually(registry.alive, 15, "the relay registered", interval=0.1)
        await a_call(store, "on-a", relay_id="relay-a")
        await a_call(store, "elsewhere", relay_id="relay-b")
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


async def test_a_relay_restarted_on_a_lost_ones_address_ends_its_calls(
    store: CallStore, redis_url: str
) -> None:
    """A relay killed and restarted at once on its address under a new id (as
    `quietwire up` or a pod restart does): the stream there follows the new
    relay, yet the calls of the lost one end once its entry expires."""
    low = free_port() & ~1
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_RELAY_ID="relay-new",
        QW_RELAY_PORT_MIN=str(low),
        QW_RELAY_PORT_MAX=str(low + 7),
    )
    started = await asyncio.to_thread(start_service, "relay", env)
    relay, grpc_port = started.process, started.grpc_port
    hangups = Hangups()
    binding = checker(store, hangups)
    try:
        registry = RelayRegistry(store.redis)
        await eventually(registry.alive, 15, "the relay registered", interval=0.1)
        # The lost relay's entry, not yet expired, at the address the new one holds.
        await registry.heartbeat(
            RelayEntry("relay-old", f"127.0.0.1:{grpc_port}", "x", 2, 1, False)
        )
        await a_call(store, "on-old", relay_id="relay-old")
        await binding.discover()
        await registry.leave("relay-old")  # its heartbeat's TTL
        await binding.discover()
        assert hangups.calls == [("on-old", "relay lost")]
        assert not binding._streams[f"127.0.0.1:{grpc_port}"].done()
    finally:
        relay.kill()
        relay.wait(10)
        await binding.close()


async def test_a_relay_lost_before_discovery_saw_it_ends_its_calls(store: CallStore) -> None:
    """A call planned on a relay that dies before the next discovery round (just
    after keyagreement started): the relay was never seen alive, yet its calls end."""
    hangups = Hangups()
    binding = checker(store, hangups)
    try:
        await a_call(store, "on-gone", relay_id="relay-gone")
        binding.follow(Relay("relay-gone", f"127.0.0.1:{free_port()}"))  # nobody listens there
        stream = next(iter(binding._streams.values()))
        async with asyncio.timeout(15):
            await asyncio.wait({stream})
            await binding._losses.wait()  # the loss is handled apart from the stream
        await binding.discover()
        assert hangups.calls == [("on-gone", "relay lost")]
    finally:
        await binding.close()


async def test_media_reports_keep_a_long_call_on_record(store: CallStore) -> None:
    """The relay's LEG_STATS renew a live call's record (calls outlast CALL_TTL);
    an ended call's record is left to expire."""
    binding = checker(store, Hangups())
    await a_call(store, "long")
    key = store.key("long")
    await store.redis.expire(key, 10)
    stats = Event(
        call_id=stream_id("long", 0), side=relay_pb2.LEG_SIDE_CALLER, kind=Event.KIND_LEG_STATS
    )
    await binding.observe(stats)
    assert await store.redis.ttl(key) > CALL_TTL - 60
    await store.change("long", lambda r: replace(r, ended="ended"))
    await binding.observe(stats)
    assert await store.redis.ttl(key) <= ENDED_TTL


async def test_replicas_seeing_the_same_events_end_a_call_once(store: CallStore) -> None:
    """Every keyagreement replica follows every relay: several seeing the same
    mismatching Hello at once move the call once (an atomic step) and end it once."""
    hangups = Hangups()
    await a_call(store, "raced")
    replicas = [checker(store, hangups) for _ in range(4)]
    bad = zrtp("raced", "Hello", HELLO + b" changed by a man in the middle")
    await asyncio.gather(*(r.observe(bad) for r in replicas))
    assert hangups.calls == [("raced", "zrtp-mismatch")]
    record = await store.get("raced")
    assert record is not None and record.binding.outcome is Outcome.MISMATCH


async def test_concurrent_evidence_secures_the_call(store: CallStore) -> None:
    """Both Hellos and the Conf2ACK reported to different replicas at once: none
    of the three steps is lost, and the call ends up zrtp-verified."""
    hangups = Hangups()
    await a_call(store, "both")
    callee_hello = zrtp("both", "Hello", HELLO, relay_pb2.LEG_SIDE_CALLEE)
    events = [zrtp("both", "Hello", HELLO), callee_hello, zrtp("both", "Conf2ACK")]
    replicas = [checker(store, hangups) for _ in events]
    await asyncio.gather(*(r.observe(e) for r, e in zip(replicas, events, strict=True)))
    record = await store.get("both")
    assert record is not None and record.binding.outcome is Outcome.SECURED, record
    assert hangups.calls == []


class Rounds(RelayRegistry):
    """The registry, telling when the discovery loop has asked it ``rounds`` times."""

    def __init__(self, client: redis.Redis, rounds: int) -> None:
        super().__init__(client)
        self.asked, self.rounds, self.done = 0, rounds, asyncio.Event()

    async def alive(self) -> list[RelayEntry]:
        self.asked += 1
        if self.asked >= self.rounds:
            self.done.set()
        return await super().alive()


async def test_a_failing_discovery_is_logged_once_and_counted(
    store: CallStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The discovery loop keeps going when Redis is away, without a traceback per round."""
    monkeypatch.setattr(binding_module, "DISCOVER_EVERY", 0.01)
    away = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    registry = Rounds(away, rounds=3)
    loop = BindingChecker(CallStore(away), registry, RelayClients(None), Hangups())
    errors = LOOP_ERRORS.labels("relay discovery", "ConnectionError")
    before = errors._value.get()
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(20):
            await registry.done.wait()
        assert errors._value.get() >= before + 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await away.aclose()
    failures = [r for r in caplog.records if r.getMessage() == "relay discovery failed"]
    assert len(failures) == 1


async def test_an_event_naming_no_stream_is_counted_and_dropped(store: CallStore) -> None:
    hangups = Hangups()
    await a_call(store, "kept")
    dropped = binding_module.BAD_EVENTS._value.get()
    for name in ("kept", "kept#", "#0", ""):
        await checker(store, hangups).observe(Event(call_id=name, kind=Event.KIND_MEDIA_TIMEOUT))
    assert binding_module.BAD_EVENTS._value.get() == dropped + 4
    assert hangups.calls == []


class Replaying(RelayClients):
    """A relay whose event stream carries ``events`` and ends (what is tested is the
    loop that follows it, not the relay)."""

    def __init__(self, events: list[relay_pb2.MediaEvent]) -> None:
        super().__init__(None)
        self.events = events

    def stub(self, address: str) -> Any:
        return self

    async def WatchEvents(
        self, request: relay_pb2.WatchEventsRequest
    ) -> AsyncIterator[relay_pb2.MediaEvent]:
        for event in self.events:
            yield event


async def test_an_event_that_fails_is_counted_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis away while a relay's events arrive: each failed event counted, one log
    line, and the stream still followed (it used to end with the first error)."""
    away = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    timeouts = [Event(call_id=stream_id(c, 0), kind=Event.KIND_MEDIA_TIMEOUT) for c in "abc"]
    follower = BindingChecker(CallStore(away), RelayRegistry(away), Replaying(timeouts), Hangups())
    errors = LOOP_ERRORS.labels("relay event", "ConnectionError")
    before = errors._value.get()
    try:
        async with asyncio.timeout(20):
            await follower._follow("127.0.0.1:1")
    finally:
        await away.aclose()
    assert errors._value.get() == before + 3
    assert len([r for r in caplog.records if r.getMessage() == "relay event failed"]) == 1


async def test_a_killed_relay_is_lost_at_once_and_its_calls_handed_over(
    store: CallStore, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL: its event stream breaks and it no longer answers, so it is lost
    within LOST_AFTER, while its registry entry still stands (it would expire
    seconds later); its calls go to the lost-relay path (migration), not ended here."""
    with relay_process(redis_url, tmp_path / "relay.log", QW_RELAY_ID="relay-k") as relay:
        await killed_relay_handed_over(store, relay.process)


async def killed_relay_handed_over(store: CallStore, relay: subprocess.Popen[str]) -> None:
    hangups = Hangups()
    binding = checker(store, hangups)
    handed: list[tuple[str, list[str]]] = []

    async def lost_calls(relay_id: str, call_ids: Sequence[str]) -> None:
        handed.append((relay_id, list(call_ids)))

    binding.lost_calls = lost_calls
    try:
        registry = RelayRegistry(store.redis)
        await eventually(registry.alive, 15, "the relay registered", interval=0.1)
        await a_call(store, "on-k", relay_id="relay-k")
        await a_call(store, "elsewhere", relay_id="relay-b")
        await binding.discover()

        relay.kill()
        relay.wait(10)
        killed = asyncio.get_running_loop().time()

        async def handed_over() -> bool:
            return bool(handed)

        await eventually(handed_over, 10, "the killed relay's calls handed over", interval=0.05)
        took = asyncio.get_running_loop().time() - killed
        assert took < binding_module.LOST_AFTER + 2, took
        assert [r.relay_id for r in await registry.alive()] == ["relay-k"]  # not yet expired
        assert handed == [("relay-k", ["on-k"])]
        assert hangups.calls == []
    finally:
        await binding.close()


async def test_events_of_the_relay_a_call_left_are_ignored(store: CallStore) -> None:
    """After a call moved (its record names relay B), relay A's late media timeout
    and a Hello seen there change nothing; B's events count as before."""
    hangups = Hangups()
    await a_call(store, "moved")  # planned on 127.0.0.1:1
    binding = checker(store, hangups)
    old, new = "127.0.0.1:2", "127.0.0.1:1"
    timeout = Event(call_id=stream_id("moved", 0), kind=Event.KIND_MEDIA_TIMEOUT)
    await binding.observe(timeout, old)
    await binding.observe(zrtp("moved", "Hello", HELLO + b" on the old relay"), old)
    record = await store.get("moved")
    assert record is not None and record.binding.outcome is Outcome.WAITING
    assert hangups.calls == []
    await binding.observe(zrtp("moved", "Hello", HELLO), new)
    record = await store.get("moved")
    assert record is not None and record.binding.outcome is Outcome.HANDSHAKING
    await binding.observe(timeout, new)
    assert hangups.calls == [("moved", "media timeout")]


async def test_live_calls_are_read_in_batches_and_ended_ones_leave_the_index(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a lost relay's calls are looked up among: every live record, read
    LIVE_BATCH at a time; an ended one and one whose record vanished drop out."""
    monkeypatch.setattr(calls_module, "LIVE_BATCH", 2)
    for call_id in ("c1", "c2", "c3", "c4", "c5"):
        await a_call(store, call_id)
    await store.change("c2", lambda r: replace(r, ended="bye"))
    await store.redis.delete(store.key("c4"))
    live = await store.live(100)
    assert sorted(r.call_id for r in live) == ["c1", "c3", "c5"]
    assert sorted(m.decode() for m in await store.redis.zrange(calls_module.CALLS_KEY, 0, -1)) == [
        "c1",
        "c3",
        "c5",
    ]
