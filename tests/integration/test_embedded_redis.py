"""The embedded Redis of `quietwire up` keeps what it was told across a crash
(append-only file, fsync every second), not only what the last snapshot had."""

from __future__ import annotations

import signal
from pathlib import Path

import redis.asyncio as redis
from quietwire.embedded.children import Child
from quietwire.embedded.redis_server import redis_child, wait_redis


async def started(state: Path) -> tuple[Child, redis.Redis]:
    child, url = redis_child(state, "test-password")
    await child.start()
    client = redis.from_url(url, password="test-password")
    await wait_redis(client, child, 20)
    return child, client


async def test_a_killed_redis_comes_back_with_its_writes(tmp_path: Path) -> None:
    child, client = await started(tmp_path)
    try:
        # Redis writes the append-only file before it answers; fsync each second
        # only matters when the machine, not the process, dies.
        await client.set("qw:binding:alice", "flow-1")
        await client.set("qw:dialog:1", "established")
        info = await client.info("persistence")
        assert info["aof_enabled"] == 1
    finally:
        await client.aclose()
        child.signal(signal.SIGKILL)
        await child.wait(10)
    again, client = await started(tmp_path)
    try:
        assert await client.get("qw:binding:alice") == b"flow-1"
        assert await client.get("qw:dialog:1") == b"established"
    finally:
        await client.aclose()
        again.signal(signal.SIGTERM)
        await again.wait(10)
