"""The Redis client every service and admin command uses."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as redis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from quietwire.runtime.aio import finally_await
from quietwire.runtime.redismux import Multiplexer, pack
from quietwire.runtime.settings import CommonSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A command is never retried by the client: a write whose connection broke
#: may already be applied, and a retry would apply it twice (the registrar's
#: CSeq check would then answer a REGISTER 500). The request is answered 503
#: with Retry-After at once and the phone repeats it, as SIP expects. Nothing
#: is lost by it: the pool reconnects a connection found dead before it lends
#: it (the multiplexed connection of :class:`LuaScript` is given up as soon as
#: Redis closes it), and a Sentinel-managed connection asks the Sentinels for the master at
#: every connect, so the first request after a promotion reaches the new master.
#: Explicit, as redis-py's defaults have changed between releases.
NO_RETRY = Retry(NoBackoff(), 0)

#: Seconds a WAIT's answer may take past its timeout (a loaded server, the network).
WAIT_SLACK = 2.0

UNREPLICATED = Counter(
    "quietwire_redis_unreplicated_writes",
    "Writes answered before QW_REDIS_WAIT_REPLICAS replicas confirmed them",
)


class MultiplexedRedis(redis.Redis):
    """redis-py's pooled client, with a :class:`Multiplexer` on one of its pool's
    connections for the hot commands (:class:`LuaScript`), made at its first use."""

    _multiplexer: Multiplexer | None = None

    @property
    def multiplexer(self) -> Multiplexer:
        # Not a cached_property: compiled by mypyc, that would be a plain property.
        if self._multiplexer is None:
            self._multiplexer = Multiplexer(self.connection_pool)
        return self._multiplexer

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._multiplexer is not None:
            await self._multiplexer.aclose()
        await super().aclose(close_connection_pool)


def redis_client(settings: CommonSettings) -> redis.Redis:
    """A pooled client for ``QW_REDIS_URL`` (or the master the Sentinels name).

    Commands time out rather than hang; TLS verifies the server against
    ``QW_REDIS_TLS_CA`` when it is set. It is a :class:`MultiplexedRedis`.
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    options: dict[str, Any] = {
        "password": password,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 15,
        "max_connections": 64,
        "decode_responses": False,
        "retry": NO_RETRY,
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
        client: redis.Redis = MultiplexedRedis.from_pool(pool)
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
    master: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=MultiplexedRedis
    )
    return master


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes: values may be protobuf)."""
    return value.decode() if isinstance(value, bytes) else value


def _multiplexed(client: redis.Redis) -> TypeGuard[MultiplexedRedis]:
    """Whether ``client`` pipelines on its multiplexer: a pooled :class:`MultiplexedRedis`
    (not the single-connection client of :meth:`Replication.durable`)."""
    return isinstance(client, MultiplexedRedis) and client.connection is None


class LuaScript:
    """A Lua script run by EVALSHA, loaded again (SCRIPT LOAD) when Redis answers
    NOSCRIPT: after a restart, a failover or a SCRIPT FLUSH.

    On a :class:`MultiplexedRedis` the command is packed once and pipelined on
    the connection its :class:`~quietwire.runtime.redismux.Multiplexer` shares
    between concurrent requests: not through redis-py's ``register_script``
    object, ``execute_command`` and a connection lent by the pool per command
    (type checks, a retry wrapper, observability hooks, the pool's lock and
    health check, each argument encoded in Python), which cost more than the
    rest of a re-REGISTER's Redis work. A single-connection client
    (:meth:`Replication.durable`), or any other, runs it through redis-py.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        # The name Redis gives a script (EVALSHA), not a safeguard.
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: redis.Redis, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        """The script's reply (raw: bytes, ints, lists)."""
        try:
            return await self._evalsha(client, keys, args)
        except NoScriptError:
            pass  # loaded again after the handler (runtime/aio.py says why)
        await self.load(client)
        return await self._evalsha(client, keys, args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[EncodableT]) -> None:
        """EVALSHA on a pipeline; on :class:`NoScriptError`, :meth:`load` and run it again."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self, client: redis.Redis) -> None:
        if _multiplexed(client):
            await client.multiplexer.execute(pack("SCRIPT", "LOAD", self.source))
        else:
            await client.script_load(self.source)

    async def _evalsha(
        self, client: redis.Redis, keys: Sequence[str], args: Sequence[EncodableT]
    ) -> Any:
        if _multiplexed(client):
            return await client.multiplexer.execute(
                pack("EVALSHA", self.sha, len(keys), *keys, *args)
            )
        return await client.evalsha(self.sha, len(keys), *keys, *args)


async def executed(pipe: Pipeline) -> list[Any]:
    """The replies of ``pipe``, whose connection then goes back: what ``async with
    pipe`` does, for compiled modules, which must not await on the way out of an
    exception (runtime/aio.py says why)."""
    return await finally_await(pipe.execute(), lambda _: pipe.aclose())


@dataclass(frozen=True, slots=True)
class Replication:
    """Redis ``WAIT`` after the writes whose loss matters (``QW_REDIS_WAIT_REPLICAS``).

    Replication is asynchronous: a write the master acknowledged may not have
    reached a replica when the master dies, and Sentinel then promotes a replica
    without it. ``WAIT numreplicas timeout`` blocks until the replicas confirm
    every earlier write *of the same connection*, so the writes and the WAIT
    share one connection (:meth:`durable`).

    When the replicas do not confirm in time the write stands (it is on the
    master; refusing the request would not take it back) and the shortfall is
    counted and logged, like MySQL's semi-synchronous replication falling back
    to asynchronous: one replica's death slows writes by the timeout but stops
    nothing, and only a second fault (the master dying before the replica
    returns) can lose a write.
    """

    replicas: int = 0
    timeout: float = 0.25

    @classmethod
    def of(cls, settings: CommonSettings) -> Replication:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout)

    def durable(self, client: redis.Redis) -> Durable:
        """A client for the block's writes; on leaving, they are on the replicas
        (or the shortfall is counted). Without replicas to wait for: ``client``."""
        return Durable(self, client)

    async def durably(self, client: redis.Redis, write: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """``write`` in a :meth:`durable` block, for compiled modules: their
        ``async with`` must not await on the way out of an exception (runtime/aio.py)."""
        block = self.durable(client)
        return await finally_await(write(await block.__aenter__()), block.close)

    async def _wait(self, connection: AbstractConnection) -> int:
        """WAIT on the connection that made the writes. Never on another: a WAIT
        there (perhaps on a new master) would confirm none of them. So it is not
        retried and does not reconnect; the client retries nothing either
        (:data:`NO_RETRY`), so a connection lost in the block raised out of it.
        Its own deadline, past the WAIT's: the socket timeout may be shorter."""
        if not connection.is_connected:
            raise RedisConnectionError("connection lost before WAIT")
        milliseconds = int(self.timeout * 1000)
        await connection.send_command("WAIT", self.replicas, milliseconds, check_health=False)
        return int(await connection.read_response(timeout=self.timeout + WAIT_SLACK))


class Durable:
    """The block of :meth:`Replication.durable`: its writes go on one connection,
    which WAITs for the replicas when the block ends without an error.

    A class rather than an ``asynccontextmanager``: mypyc compiles no async
    generator (this module is compiled, tools/build_native.py)."""

    def __init__(self, replication: Replication, client: redis.Redis) -> None:
        self.replication = replication
        self.client = client
        #: The single-connection client of the block, when there are replicas to wait for.
        self.one: redis.Redis | None = None

    async def __aenter__(self) -> redis.Redis:
        if not self.replication.replicas:
            return self.client
        self.one = await self.client.client().__aenter__()
        return self.one

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close(error)

    async def close(self, failure: BaseException | None) -> None:
        """The end of the block, ``failure`` what it raised: WAIT for the
        replicas after writes that all happened; the connection goes back."""
        one = self.one
        if one is None:
            return
        if failure is not None:  # the writes did not all happen: nothing to wait for
            await self._release(one)
            return
        connection = one.connection
        assert connection is not None  # a single-connection client holds one once entered
        replication = self.replication
        acked = await finally_await(replication._wait(connection), lambda _: self._release(one))
        if acked < replication.replicas:
            UNREPLICATED.inc()
            log.warning(
                "write not confirmed by the replicas",
                extra={"replicas": acked, "wanted": replication.replicas},
            )

    @staticmethod
    async def _release(one: redis.Redis) -> None:
        await one.__aexit__(None, None, None)  # type: ignore[no-untyped-call]  # redis-py's


#: Writes answered without waiting for replicas (a single Redis).
UNWAITED = Replication()


async def redis_ready(client: redis.Redis) -> bool:
    """Readiness: Redis answers PING."""
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
