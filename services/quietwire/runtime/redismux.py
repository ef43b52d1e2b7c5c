"""Hot Redis commands pipelined on one connection that concurrent requests share.

redis-py runs every command on a connection its pool lends for that command:
the pool round trip (lock, observability counters, a health check), the
encoding of each argument in Python and a read per reply cost more than the
command itself. A :class:`Multiplexer` instead borrows ONE connection from the
client's pool, so its address, AUTH, TLS and, under Sentinel, the master's
discovery at connect stay redis-py's, and writes each command on it packed at
once by hiredis. Replies come back in the order the commands were sent (RESP),
so a queue of futures in send order resolves them as their bytes arrive.

Failures keep redis-py's meaning, so callers answer SIP as before:

- an error reply fails its own command only (redis-py's exception for it:
  :class:`~redis.exceptions.NoScriptError`, :class:`~redis.exceptions.ResponseError`…);
- a closed or reset connection, a reply that breaks the protocol, or no reply
  within the socket timeout fails EVERY command in flight with
  :class:`~redis.exceptions.ConnectionError` or :class:`~redis.exceptions.TimeoutError`
  (nothing is retried: a write may have been applied), and that connection is
  closed and given back; the next command borrows another. Only one borrow at
  a time, shared by the commands that wait for it;
- a connection Redis closed while idle (a restart, a demoted master) is noticed
  by the reader at once and never written to, as the pool checks a connection
  before lending it;
- a caller cancelled mid-flight leaves its reply to be read and dropped: the
  replies of the others stay in step.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers import BaseParser, Encoder
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import DEMOTED_MASTER_UNBLOCKED_ERROR
from redis.typing import EncodableT

from quietwire.runtime.aio import Tasks, finally_await

log = logging.getLogger(__name__)

#: Bytes waiting to be sent past which a writer waits for the socket to drain.
HIGH_WATER = 1 << 20

#: Seconds without a reply a command waits, when the pool gives no socket timeout.
DEFAULT_TIMEOUT = 5.0

#: What the parser answers while a reply is incomplete.
_INCOMPLETE = object()


#: redis-py's argument encoding, for what hiredis does not pack itself.
_ENCODER = Encoder("utf-8", "strict", decode_responses=False)  # type: ignore[no-untyped-call]


def pack(*args: EncodableT) -> bytes:
    """One command as RESP, as redis-py writes it: str as UTF-8, numbers as
    their text, memoryview as its bytes, anything else a DataError."""
    # hiredis's stub types its argument as a 1-tuple.
    try:
        return bytes(hiredis.pack_command(args))  # type: ignore[arg-type]
    except TypeError:
        encoded = tuple(bytes(_ENCODER.encode(arg)) for arg in args)  # type: ignore[no-untyped-call]
        return bytes(hiredis.pack_command(encoded))  # type: ignore[arg-type]


class _Link(asyncio.Protocol):
    """One borrowed connection: commands written on it, their futures in send
    order, the parser that resolves them as the bytes arrive and the watchdog of
    their timeout.

    The link is the protocol of the connection's transport while it lends it:
    each reply resolves its
    command's future straight from ``data_received``, with no reader task to
    wake in between. What the transport says of flow control and of its end is
    passed on to redis-py's own protocol, so its ``drain`` and ``disconnect``
    work as they did."""

    def __init__(
        self,
        connection: AbstractConnection,
        timeout: float,
        lost: Callable[[_Link], None],
    ) -> None:
        # redis-py's own streams: AUTH, TLS and SELECT were done on them at connect.
        reader, writer = connection._reader, connection._writer
        assert reader is not None and writer is not None  # a lent connection is connected
        self.connection = connection
        self.failure: RedisError | None = None
        self._writer = writer
        self._transport = writer.transport
        self._streams: Any = self._transport.get_protocol()
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._lost_callback = lost
        self._waiting: deque[asyncio.Future[Any]] = deque()
        #: Since when the oldest command has waited for its reply (loop time).
        self._since = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._demotable = isinstance(connection, SentinelManagedConnection) and bool(
            connection.connection_pool.is_master
        )
        self._parser = hiredis.Reader(
            protocolError=RedisConnectionError,
            replyError=BaseParser.parse_error,
            notEnoughData=_INCOMPLETE,
        )
        self._ended = reader.at_eof()
        self._transport.set_protocol(self)
        if self._ended:  # closed by Redis between the pool's check and now
            self.fail(RedisConnectionError("Connection closed by server."))

    @property
    def usable(self) -> bool:
        return self.failure is None and not self._ended and not self._transport.is_closing()

    async def send(self, packed: bytes) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        waiting = self._waiting
        if not waiting:
            self._since = self._loop.time()
            if self._watchdog is None:
                self._watchdog = self._loop.call_later(self._timeout, self._watch)
        waiting.append(future)
        self._transport.write(packed)
        if self._transport.get_write_buffer_size() > HIGH_WATER:
            try:
                await self._writer.drain()
            except OSError as error:
                self.fail(self._lost(error))
        # Cancelling the caller cancels this future only: its reply is still read.
        return await future

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting or self.failure is not None:
            return
        late = self._loop.time() - self._since
        if late >= self._timeout:
            self.fail(RedisTimeoutError(f"Timeout reading from {self._address}"))
        else:
            self._watchdog = self._loop.call_later(self._timeout - late, self._watch)

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self._resolve(data)
        except RedisError as error:
            self.fail(error)
        except Exception as error:  # a fault of ours: no command may wait on this link
            log.exception("Redis reader failed")
            self.fail(RedisConnectionError(f"reader failed: {error!r}"))

    def _resolve(self, data: bytes) -> None:
        """Each complete reply in ``data`` (and what came before it) to its command."""
        parser, waiting = self._parser, self._waiting
        parser.feed(data)
        reply = parser.gets()
        while reply is not _INCOMPLETE:
            if not waiting:
                raise RedisConnectionError("a reply no command waits for")
            if isinstance(reply, RedisError):
                self._check_error(reply)  # raised: its command fails with the others
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(reply)
            else:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(reply)
            reply = parser.gets()
        self._since = self._loop.time()

    def eof_received(self) -> bool:
        self._ended = True
        self.fail(RedisConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self._ended = True
        if isinstance(error, OSError):
            self.fail(self._lost(error))
        else:
            self.fail(RedisConnectionError("Connection closed by server."))
        self._streams.connection_lost(error)

    def pause_writing(self) -> None:
        self._streams.pause_writing()

    def resume_writing(self) -> None:
        self._streams.resume_writing()

    def _check_error(self, reply: RedisError) -> None:
        """Raise when an error reply means the connection is unusable: a
        :class:`~redis.exceptions.ConnectionError` of redis-py's (LOADING,
        NOAUTH…), on which redis-py disconnects; a Sentinel master's server
        become a replica, lost as redis-py's ``SentinelManagedConnection`` loses
        it, so that the next connect asks the Sentinels for the new master."""
        if not isinstance(reply, ResponseError):
            raise reply
        if self._demotable and (
            isinstance(reply, ReadOnlyError)
            or str(reply).startswith(DEMOTED_MASTER_UNBLOCKED_ERROR)
        ):
            raise RedisConnectionError("The previous master is now a slave")

    def _lost(self, error: OSError) -> RedisConnectionError:
        return RedisConnectionError(f"Error while reading from {self._address} : {error.args}")

    @property
    def _address(self) -> str:
        return str(self.connection._host_error())

    def fail(self, error: RedisError) -> None:
        """Fail every command in flight (each with its own copy of ``error``) and
        stop reading; the connection is then closed and given back."""
        if self.failure is not None:
            return
        self.failure = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(type(error)(*error.args))
        self._transport.abort()
        self._lost_callback(self)


class Multiplexer:
    """Commands of many concurrent callers on one connection of ``pool``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        timeout = pool.connection_kwargs.get("socket_timeout")
        self._timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        self._link: _Link | None = None
        self._linking: asyncio.Future[_Link] | None = None
        self._returning = Tasks()

    @property
    def connected(self) -> bool:
        """Whether the next command goes to the connection of the previous one."""
        return self._link is not None and self._link.usable

    async def execute(self, packed: bytes) -> Any:
        """The reply to one command packed by :func:`pack` (raw: bytes, ints, lists)."""
        link = self._link
        if link is None or not link.usable:
            link = await self._connected()
        return await link.send(packed)

    async def _connected(self) -> _Link:
        """A usable link; one borrow at a time, which callers share and none of
        them cancels (the others still wait for it)."""
        if self._link is not None:  # closed by Redis, not yet seen by its reader
            self._link.fail(RedisConnectionError("Connection closed by server."))
        if self._linking is None:
            self._linking = asyncio.ensure_future(self._borrow())
            self._linking.add_done_callback(self._linked)
        return await asyncio.shield(self._linking)

    async def _borrow(self) -> _Link:
        connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return _Link(connection, self._timeout, self._lost)

    def _linked(self, linking: asyncio.Future[_Link]) -> None:
        self._linking = None
        if not linking.cancelled() and linking.exception() is None:
            link = linking.result()
            if link.failure is None:
                self._link = link

    def _lost(self, link: _Link) -> None:
        """``link`` failed: its connection is closed and given back to the pool."""
        if self._link is link:
            self._link = None
        self._returning.spawn(self._give_back(link.connection))

    async def _give_back(self, connection: AbstractConnection) -> None:
        await finally_await(connection.disconnect(), lambda _: self._pool.release(connection))

    async def aclose(self) -> None:
        """Fail what is in flight and give the connection back."""
        if self._linking is not None:
            self._linking.cancel()
        if self._link is not None:
            self._link.fail(RedisConnectionError("Connection closed by the client."))
        await self._returning.wait()
