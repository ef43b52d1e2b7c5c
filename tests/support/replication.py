"""Redis replication for fault tests: a master, a replica behind a slow link,
and Sentinels watching them, all real ``redis-server`` processes.

The replica reaches its master through :class:`SlowLink`, which holds every
byte for a while before passing it on, so the replica is always a little
behind, as a replica across a real network is. A write answered before the
master dies may then be missing from the replica, unless the writer waited for
the replica (``WAIT``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis as redis_sync

from tests.conftest import RedisServer, start_redis, stop_redis

#: The name the Sentinels give the master.
MASTER_NAME = "qw"


class SlowLink:
    """A loopback TCP relay to ``127.0.0.1:target`` that delays each direction by
    ``delay`` seconds (order kept). Closing it drops what it still holds, as a
    dead peer would."""

    def __init__(self, target: int, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SlowLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._spawn(self._pipe(reader, peer_writer))
        self._spawn(self._pipe(peer_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    held.put_nowait((loop.time() + self.delay, data))
        finally:
            # The sender is gone: what is still held dies with it.
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)
            writer.close()


def start_replica(directory: Path, master_port: int, password: str) -> RedisServer:
    """A replica of the master reached at ``master_port``, with the same password."""
    return start_redis(
        directory,
        "--requirepass",
        password,
        "--masterauth",
        password,
        "--replicaof",
        "127.0.0.1",
        str(master_port),
    )


def link_up(replica: RedisServer, password: str) -> bool:
    """The replica is connected to its master and in step (``INFO replication``)."""
    client = redis_sync.Redis(port=replica.port, password=password, socket_timeout=2)
    try:
        return bool(client.info("replication").get("master_link_status") == "up")
    except (redis_sync.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class Sentinels:
    """Sentinel processes watching one master under :data:`MASTER_NAME`."""

    servers: list[RedisServer]
    password: str

    @property
    def addresses(self) -> str:
        """As ``QW_REDIS_SENTINELS`` takes them."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def _ask(self, server: RedisServer) -> dict[str, str]:
        client = redis_sync.Redis(
            port=server.port, password=self.password, socket_timeout=2, decode_responses=True
        )
        try:
            reply: dict[str, str] = client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
            return reply
        except (redis_sync.RedisError, OSError):
            return {}
        finally:
            client.close()

    def views(self) -> list[dict[str, str]]:
        """What each Sentinel says of the master (empty when it does not answer)."""
        return [self._ask(server) for server in self.servers]

    def agreed_master(self) -> int | None:
        """The master's port, when every Sentinel names the same healthy one."""
        ports = set()
        for view in self.views():
            if not view or view.get("flags") != "master":
                return None
            ports.add(int(view["port"]))
        return ports.pop() if len(ports) == 1 else None

    def watching(self, master_port: int, replicas: int) -> bool:
        """Every Sentinel knows the master, its replicas and the other Sentinels."""
        return all(
            view.get("flags") == "master"
            and int(view.get("port", 0)) == master_port
            and int(view.get("num-slaves", 0)) == replicas
            and int(view.get("num-other-sentinels", 0)) == len(self.servers) - 1
            for view in self.views()
        )


@contextmanager
def sentinels(
    directory: Path,
    master_port: int,
    password: str,
    *,
    count: int = 3,
    quorum: int = 2,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> Iterator[Sentinels]:
    """``count`` Sentinels (``quorum`` to agree the master is down), stopped after."""
    started: list[RedisServer] = []
    try:
        for number in range(count):
            config = directory / f"sentinel-{number}.conf"
            config.write_text(
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
                f"sentinel auth-pass {MASTER_NAME} {password}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                f"requirepass {password}\n"
            )
            started.append(start_redis(directory, "--sentinel", config=config))
        yield Sentinels(started, password)
    finally:
        for server in started:
            stop_redis(server)
