"""The Redis client against real redis-server processes: Sentinel and TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis as redis_sync
from quietwire.embedded.pki import ensure_pki
from quietwire.runtime.redisclient import (
    UNREPLICATED,
    LuaScript,
    Replication,
    redis_client,
    redis_ready,
)
from quietwire.runtime.settings import CommonSettings, SettingsError, load_settings
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import RedisServer, free_port, start_redis, stop_redis
from tests.support.replication import SlowLink, link_up, start_replica
from tests.support.wait import eventually

PASSWORD = "sentinel-test-password"
#: The value of a key, read by a Lua script.
ECHO = LuaScript("return redis.call('GET', KEYS[1])")


async def test_sentinel_names_the_master(tmp_path: Path) -> None:
    master = start_redis(tmp_path, "--requirepass", PASSWORD)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor qw 127.0.0.1 {master.port} 1\n"
        f"sentinel auth-pass qw {PASSWORD}\n"
        f"requirepass {PASSWORD}\n"
    )
    sentinel = start_redis(tmp_path, "--sentinel", config=conf)
    try:
        settings = load_settings(
            CommonSettings,
            redis_url="redis:///3",
            redis_password=PASSWORD,
            redis_sentinels=f"127.0.0.1:{sentinel.port}",
            redis_sentinel_master="qw",
        )
        client = redis_client(settings)
        assert await redis_ready(client)
        await client.set("qw:test", b"through sentinel")
        # A Lua script on the multiplexed connection: AUTH and the database are the pool's.
        assert await ECHO(client, ("qw:test",), ()) == b"through sentinel"
        await client.aclose()
        direct = redis_sync.Redis(port=master.port, password=PASSWORD, db=3)
        assert direct.get("qw:test") == b"through sentinel"

        unknown = redis_client(settings.model_copy(update={"redis_sentinel_master": "nope"}))
        assert not await redis_ready(unknown)
        await unknown.aclose()
    finally:
        stop_redis(sentinel)
        stop_redis(master)


async def test_tls_verified_against_the_configured_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki", "127.0.0.1")
    tls_port = free_port()
    server = start_redis(
        tmp_path,
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(pki.grpc_cert),
        "--tls-key-file",
        str(pki.grpc_key),
        "--tls-ca-cert-file",
        str(pki.ca),
        "--tls-auth-clients",
        "no",
    )
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        trusted = redis_client(load_settings(CommonSettings, redis_url=url, redis_tls_ca=pki.ca))
        assert await redis_ready(trusted)
        await trusted.set("qw:tls", b"1")
        assert await ECHO(trusted, ("qw:tls",), ()) == b"1"
        await trusted.aclose()

        untrusted = redis_client(load_settings(CommonSettings, redis_url=url))
        assert not await redis_ready(untrusted)
        with pytest.raises(RedisConnectionError):
            await ECHO(untrusted, ("qw:tls",), ())
        await untrusted.aclose()
    finally:
        stop_redis(server)


def test_sentinel_list_is_checked() -> None:
    with pytest.raises(SettingsError, match="QW_REDIS_SENTINELS"):
        load_settings(CommonSettings, redis_sentinels="10.0.0.1:26379,no-port")


def test_wait_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="QW_REDIS_WAIT_REPLICAS"):
        load_settings(CommonSettings, redis_wait_replicas=-1)
    with pytest.raises(SettingsError, match="QW_REDIS_WAIT_TIMEOUT"):
        load_settings(CommonSettings, redis_wait_timeout=0)


async def test_a_durable_write_is_on_the_replica_when_it_returns(tmp_path: Path) -> None:
    """The replica is 0.3 s behind: a plain write is not on it yet when the master
    answers; a write in ``durable`` is, and one waiting for a replica that does not
    exist returns after the timeout, counted, the write kept on the master."""
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = start_redis(
        tmp_path / "master", "--requirepass", PASSWORD, "--repl-diskless-sync-delay", "0"
    )
    try:
        async with SlowLink(master.port, delay=0.3) as link:
            replica = start_replica(tmp_path / "replica", link.port, PASSWORD)
            try:
                await check_durable_writes(master, replica)
            finally:
                stop_redis(replica)
    finally:  # once the link is closed: a master stopping waits for a replica it still sees
        stop_redis(master)


async def check_durable_writes(master: RedisServer, replica: RedisServer) -> None:
    replica_client = redis_sync.Redis(port=replica.port, password=PASSWORD)
    settings = load_settings(
        CommonSettings,
        redis_url=master.url,
        redis_password=PASSWORD,
        redis_wait_replicas=1,
        redis_wait_timeout=5,
    )
    client = redis_client(settings)
    try:

        async def in_sync() -> bool:
            return await asyncio.to_thread(link_up, replica, PASSWORD)

        await eventually(in_sync, 30, "the replica in sync")
        await client.set("qw:plain", b"1")
        assert replica_client.get("qw:plain") is None, "the link is not slow"

        async with Replication.of(settings).durable(client) as durable:
            await durable.set("qw:durable", b"1")
        assert replica_client.get("qw:durable") == b"1"

        before = UNREPLICATED._value.get()
        async with Replication(2, 0.2).durable(client) as durable:
            await durable.set("qw:short", b"1")
        assert UNREPLICATED._value.get() == before + 1
        assert await client.get("qw:short") == b"1"

        # A connection lost in the block, before or after its last write: the
        # block fails (the request gets 503), never a WAIT on another connection,
        # which would confirm none of the writes.
        master_client = redis_sync.Redis(port=master.port, password=PASSWORD)
        try:
            for writes_after in (1, 0):
                with pytest.raises(redis_sync.ConnectionError):
                    await lose_connection(
                        Replication.of(settings), client, master_client, writes_after
                    )
        finally:
            master_client.close()
        assert UNREPLICATED._value.get() == before + 1
    finally:
        await client.aclose()
        replica_client.close()


async def lose_connection(
    replication: Replication, client: Redis, admin: redis_sync.Redis, writes_after: int
) -> None:
    """A durable block whose connection is killed after one write, then ``writes_after`` more."""
    async with replication.durable(client) as durable:
        await durable.set("qw:before", b"1")
        admin.client_kill_filter(_id=await durable.client_id())
        for _ in range(writes_after):
            await durable.set("qw:after", b"1")
