"""The failed-authentication lockout against a real Redis: IPv6 sources counted per /64,
blocks in Redis seen by a second replica, counters that expire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from quietwire.signaling.lockout import Lockout, LockoutPolicy, current_source

from tests.support.clock import FakeClock

POLICY = LockoutPolicy(
    source_failures=3,
    source_window=60,
    source_block=60,
    user_failures=7,
    user_window=60,
    user_block=60,
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(redis_url)
    yield client
    await client.aclose()


async def fail_from(lockout: Lockout, address: str, username: str | None = None) -> None:
    token = current_source.set(address)
    try:
        await lockout.failed(username)
    finally:
        current_source.reset(token)


async def blocked_in_redis(client: redis.Redis, lockout: Lockout, address: str) -> bool:
    token = current_source.set(address)
    try:
        keys = lockout.block_keys("alice")
    finally:
        current_source.reset(token)
    return any([await client.pttl(key) > 0 for key in keys[1:]])


async def test_an_ipv6_64_is_one_source(client: redis.Redis) -> None:
    lockout = Lockout(client, "example.org", b"k" * 32, POLICY, FakeClock(1000.0))
    for host in ("2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::9"):
        assert not lockout.blocked(host)
        await fail_from(lockout, host)
    assert lockout.blocked("2001:db8:1:1::77")  # anywhere in the /64
    assert not lockout.blocked("2001:db8:1:2::1")  # the next /64 is someone else
    assert await blocked_in_redis(client, lockout, "2001:db8:1:1::5")
    assert not await blocked_in_redis(client, lockout, "2001:db8:1:2::1")


async def test_another_replica_learns_a_block_from_redis(client: redis.Redis) -> None:
    first = Lockout(client, "example.org", b"k" * 32, POLICY, FakeClock(1000.0))
    second = Lockout(client, "example.org", b"k" * 32, POLICY, FakeClock(1000.0))
    for _ in range(3):
        await fail_from(first, "192.0.2.9")
    assert first.blocked("192.0.2.9") and not second.blocked("192.0.2.9")  # memory: per replica
    token = current_source.set("192.0.2.9")
    try:
        pttls = [await client.pttl(key) for key in second.block_keys("alice")]
        assert second.refused(pttls)
    finally:
        current_source.reset(token)
    assert second.blocked("192.0.2.9")  # remembered: the next request is refused early


async def test_blocks_end(client: redis.Redis) -> None:
    clock = FakeClock(1000.0)
    lockout = Lockout(client, "example.org", b"k" * 32, POLICY, clock)
    for _ in range(3):
        await fail_from(lockout, "192.0.2.10")
    pttl = max([await client.pttl(key) for key in await client.keys("qw:authblock:*")])
    assert 55_000 < pttl <= 60_000
    assert await client.keys("qw:authfail:*") == []  # the count starts again after the block
    clock.t += 61
    assert not lockout.blocked("192.0.2.10")


async def test_user_failures_from_many_sources_block_the_user(client: redis.Redis) -> None:
    lockout = Lockout(client, "example.org", b"k" * 32, POLICY, FakeClock(1000.0))
    for n in range(7):
        await fail_from(lockout, f"192.0.2.{20 + n}", "alice")
    token = current_source.set("198.51.100.1")
    try:
        pttls = [await client.pttl(key) for key in lockout.block_keys("alice")]
        assert lockout.refused(pttls)
        pttls = [await client.pttl(key) for key in lockout.block_keys("bob")]
        assert not lockout.refused(pttls)
    finally:
        current_source.reset(token)
