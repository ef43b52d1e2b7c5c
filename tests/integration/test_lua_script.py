"""LuaScript against a real redis-server: EVALSHA on the multiplexed connection
(or a single-connection client's own), loaded again after NOSCRIPT, and a reply
given up on never read by the next command."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from quietwire.runtime.redisclient import LuaScript
from redis.exceptions import ResponseError

from tests.support.redis import client_for

ECHO = LuaScript("return {KEYS[1], ARGV[1]}")
#: Busy for a while before it answers (Lua cannot sleep).
SLOW = LuaScript("local n = 0 for i = 1, 50000000 do n = n + 1 end return 'slow'")
FAILS = LuaScript("return redis.error_reply('no such thing')")


async def test_a_script_is_loaded_again_when_redis_lost_it(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        assert await ECHO(client, ("k",), (1,)) == [b"k", b"1"]
        await client.script_flush()
        assert await ECHO(client, ("k",), ("again",)) == [b"k", b"again"]
        async with client.client() as one:  # a single connection (Replication.durable)
            assert await ECHO(one, ("one",), (2,)) == [b"one", b"2"]


async def test_an_error_reply_leaves_the_connection_in_step(redis_url: str) -> None:
    async with client_for(redis_url) as client:
        with pytest.raises(ResponseError, match="no such thing"):
            await FAILS(client, (), ())
        assert await ECHO(client, ("after",), (3,)) == [b"after", b"3"]


async def test_an_unread_reply_never_reaches_the_next_command(redis_url: str) -> None:
    """A script given up on (cancelled while Redis runs it) leaves its reply on
    the wire: it is read and dropped, so the next command reads its own."""
    async with client_for(redis_url) as client:
        slow = asyncio.ensure_future(SLOW(client, (), ()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(slow), 0.05)
        assert not slow.done(), "the script answered before it was given up"
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        for n in range(5):
            assert await ECHO(client, ("next",), (n,)) == [b"next", str(n).encode()]
