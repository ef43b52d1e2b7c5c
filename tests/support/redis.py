"""A Redis client as the services make theirs, for tests of the client itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.settings import CommonSettings, load_settings
from redis.asyncio import Redis


@contextlib.asynccontextmanager
async def client_for(redis_url: str) -> AsyncIterator[Redis]:
    """``redis_client`` for ``redis_url`` (the multiplexed client), closed after the block."""
    client = redis_client(load_settings(CommonSettings, redis_url=redis_url))
    try:
        yield client
    finally:
        await client.aclose()
