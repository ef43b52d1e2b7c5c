"""The Redis client every service and admin command uses."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import redis.asyncio as redis

from quietwire.runtime.health import ReadinessCheck
from quietwire.runtime.settings import CommonSettings


def redis_client(settings: CommonSettings) -> redis.Redis:
    """A pooled client for ``QW_REDIS_URL``; commands time out rather than hang."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client: redis.Redis = redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=5.0,
        socket_connect_timeout=3.0,
        health_check_interval=15,
        max_connections=64,
        decode_responses=False,
    )
    return client


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes: values may be protobuf)."""
    return value.decode() if isinstance(value, bytes) else value


async def redis_ready(client: redis.Redis) -> bool:
    """Readiness: Redis answers PING."""
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False


class RedisBackedService:
    """Base of services whose one hard dependency is Redis.

    Gives the :class:`quietwire.runtime.service.Service` defaults: readiness
    follows Redis, nothing to drain, the pool closed at the end.
    """

    grpc_services: tuple[str, ...] = ()

    def __init__(self, settings: CommonSettings) -> None:
        self.redis = redis_client(settings)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register gRPC servicers; none by default."""

    async def start(self) -> None:
        """Start background work; none by default."""

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {"redis": lambda: redis_ready(self.redis)}

    async def drain(self, timeout: float) -> None:
        """Nothing in progress to wait for by default."""

    async def close(self) -> None:
        await self.redis.aclose()
