"""The multiplexed connection behind LuaScript, against a real redis-server:
replies in step under load, an error or a cancellation confined to its own
command, and a Redis killed, restarted or frozen failing every command in
flight at once, then served again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quietwire.runtime.redisclient import NO_RETRY, LuaScript, MultiplexedRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import RedisServer, start_redis, stop_redis
from tests.support.redis import client_for
from tests.support.wait import until

ECHO = LuaScript("return {KEYS[1], ARGV[1]}")
FAILS = LuaScript("return redis.error_reply('no such thing')")
#: An error redis-py takes for a connection's (it disconnects on it).
LOADING = LuaScript("return redis.error_reply('LOADING pretended')")
#: Busy for a while before it answers (Lua cannot sleep).
SLOW = LuaScript("local n = 0 for i = 1, 50000000 do n = n + 1 end return 'slow'")
#: Concurrent commands of the load tests.
MANY = 3000


@contextlib.asynccontextmanager
async def private_redis(directory: Path) -> AsyncIterator[list[RedisServer]]:
    """A redis-server of the test's own (a list: a test may restart it)."""
    servers = [start_redis(directory)]
    try:
        yield servers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(servers[-1].process.pid, signal.SIGCONT)
        stop_redis(servers[-1])


async def echo(client: Redis, n: int) -> list[bytes]:
    reply: list[bytes] = await ECHO(client, (f"k{n}",), (n,))
    return reply


def echoed(n: int) -> list[bytes]:
    return [f"k{n}".encode(), str(n).encode()]


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    redis_url: str,
) -> None:
    async with client_for(redis_url) as client:
        assert isinstance(client, MultiplexedRedis)
        replies = await asyncio.gather(*(echo(client, n) for n in range(MANY)))
        assert replies == [echoed(n) for n in range(MANY)]
        clients = (await client.info("clients"))["connected_clients"]
        assert clients <= 2, "the commands were not multiplexed"  # and the INFO's own


async def test_an_error_reply_fails_only_its_own_command(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        runs = [FAILS(client, (), ()) if n % 7 == 0 else echo(client, n) for n in range(MANY)]
        replies = await asyncio.gather(*runs, return_exceptions=True)
        for n, reply in enumerate(replies):
            if n % 7 == 0:
                assert isinstance(reply, ResponseError) and "no such thing" in str(reply)
            else:
                assert reply == echoed(n)


async def test_a_connection_error_reply_gives_the_connection_up(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        assert isinstance(client, MultiplexedRedis)
        assert await echo(client, 0) == echoed(0)
        with pytest.raises(BusyLoadingError, match="pretended"):
            await LOADING(client, (), ())
        assert not client.multiplexer.connected
        assert await echo(client, 1) == echoed(1)


async def test_scripts_lost_by_redis_are_loaded_again_under_load(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        assert await echo(client, 0) == echoed(0)
        await client.script_flush()
        replies = await asyncio.gather(*(echo(client, n) for n in range(MANY)))
        assert replies == [echoed(n) for n in range(MANY)]


async def test_cancelled_callers_leave_the_others_replies_in_step(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        slow = asyncio.ensure_future(SLOW(client, (), ()))
        runs = [asyncio.ensure_future(echo(client, n)) for n in range(MANY)]
        await asyncio.sleep(0)  # each has written its command
        for n in range(0, MANY, 3):
            runs[n].cancel()
        slow.cancel()
        replies = await asyncio.gather(*runs, return_exceptions=True)
        for n, reply in enumerate(replies):
            if n % 3 == 0:
                assert isinstance(reply, asyncio.CancelledError)
            else:
                assert reply == echoed(n)
        assert await asyncio.gather(*(echo(client, n) for n in range(100))) == [
            echoed(n) for n in range(100)
        ]


async def test_a_killed_redis_fails_every_command_in_flight_then_serves_again(
    tmp_path: Path,
) -> None:
    async with private_redis(tmp_path) as servers, client_for(servers[0].url) as client:
        assert await echo(client, 0) == echoed(0)
        await SLOW.load(client)
        # Redis runs the script before it reads the others: they are all in flight.
        slow = asyncio.ensure_future(SLOW(client, (), ()))
        runs = [asyncio.ensure_future(echo(client, n)) for n in range(100)]
        await asyncio.sleep(0)  # each has written its command
        servers[0].process.kill()
        replies = await asyncio.wait_for(
            asyncio.gather(slow, *runs, return_exceptions=True), timeout=3
        )
        assert all(isinstance(reply, RedisConnectionError) for reply in replies), replies
        servers[0].process.wait()
        servers.append(start_redis(tmp_path, port=servers[0].port))
        assert await echo(client, 1) == echoed(1)


async def test_a_restarted_redis_is_noticed_before_the_next_command(tmp_path: Path) -> None:
    """Redis closes the idle connection when it stops: the next command, after
    it is back, goes to a new connection and succeeds."""
    async with private_redis(tmp_path) as servers, client_for(servers[0].url) as client:
        assert await echo(client, 0) == echoed(0)
        assert isinstance(client, MultiplexedRedis)
        stop_redis(servers[0])
        await until(lambda: not client.multiplexer.connected, 5, "the closed connection seen")
        servers.append(start_redis(tmp_path, port=servers[0].port))
        assert await echo(client, 1) == echoed(1)


@pytest.mark.parametrize(
    "size",
    [1, 16384],
    ids=["small", "past the socket buffers"],  # 1,000 x 16 KiB: the writers wait to drain
)
async def test_a_frozen_redis_times_out_every_command_then_serves_again(
    tmp_path: Path, size: int
) -> None:
    timeout = 0.5
    async with private_redis(tmp_path) as servers:
        pool = BlockingConnectionPool.from_url(
            servers[0].url, socket_timeout=timeout, retry=NO_RETRY
        )
        client = MultiplexedRedis.from_pool(pool)
        try:
            assert await echo(client, 0) == echoed(0)
            os.kill(servers[0].process.pid, signal.SIGSTOP)
            loop = asyncio.get_running_loop()
            started = loop.time()
            payload = "x" * size
            replies = await asyncio.gather(
                *(ECHO(client, ("k",), (payload,)) for _ in range(1000)), return_exceptions=True
            )
            assert loop.time() - started < timeout * 3
            assert all(isinstance(reply, RedisTimeoutError) for reply in replies), replies
            os.kill(servers[0].process.pid, signal.SIGCONT)
            assert await echo(client, 1) == echoed(1)
        finally:
            await client.aclose()


@pytest.mark.parametrize("value", [True, None])
async def test_arguments_redis_py_refuses_are_refused(redis_url: str, value: object) -> None:
    async with client_for(redis_url) as client:
        with pytest.raises(Exception, match="Invalid input"):
            await ECHO(client, ("k",), (value,))  # type: ignore[arg-type]
        assert await echo(client, 2) == echoed(2)
