"""The Redis client every service and admin command uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel

from quietwire.runtime.health import ReadinessCheck
from quietwire.runtime.settings import CommonSettings


def redis_client(settings: CommonSettings) -> redis.Redis:
    """A pooled client for ``QW_REDIS_URL`` (or the master the Sentinels name).

    Commands time out rather than hang; TLS verifies the server against
    ``QW_REDIS_TLS_CA`` when it is set.
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    options: dict[str, Any] = {
        "password": password,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 15,
        "max_connections": 64,
        "decode_responses": False,
    }
    url = urlsplit(settings.redis_url)
    tls = url.scheme == "rediss"
    if tls and settings.redis_tls_ca is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca)
    if not settings.sentinel_addresses:
        # Blocking: a request past ``max_connections`` in flight waits its turn,
        # up to 5 s (a registration storm), rather than failing with "Too many
        # connections".
        pool = redis.BlockingConnectionPool.from_url(settings.redis_url, timeout=5.0, **options)
        client: redis.Redis = redis.Redis.from_pool(pool)
        return client
    if tls:
        options["ssl"] = True
    sentinel = Sentinel(
        settings.sentinel_addresses,
        sentinel_kwargs={
            k: v for k, v in options.items() if k in ("password", "ssl", "ssl_ca_certs")
        }
        | {"socket_timeout": 3.0},
        db=int(url.path.strip("/") or 0),
        username=url.username,
        **options,
    )
    master: redis.Redis = sentinel.master_for(settings.redis_sentinel_master)
    return master


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
