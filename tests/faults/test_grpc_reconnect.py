"""A peer restarted on the same address is used again at once: the channel that
knew the old process does not sit out grpc's default backoff (up to 120 s)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import SERVING

from tests.conftest import free_port, quietwire_env
from tests.integration.test_service_process import wait_status

#: Reconnection attempts refused while the peer is away: grpc's default backoff
#: then waits about 10 s before the next (1, 1.6, 2.56, 4.1, 6.6, 10.5 s, ±20 %).
REFUSED_ATTEMPTS = 6


class Address:
    """The peer's address as its clients see it: while the peer is away it
    refuses every connection (counting them); once back, it carries bytes to
    the peer's own port."""

    def __init__(self, peer_port: int) -> None:
        self.peer_port = peer_port
        self.back = False
        self.refused = asyncio.Queue[None]()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.back:
            writer.close()
            self.refused.put_nowait(None)
            return
        try:
            peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", self.peer_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, peer_writer), pipe(peer_reader, writer))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def keep_connecting(channel: grpc.aio.Channel) -> None:
    """What a client with calls to make does: ask for a connection whenever the
    channel is idle (grpc leaves an idle channel alone until asked)."""
    state = channel.get_state(try_to_connect=True)
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def relay(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "quietwire", "relay"], env=env)


async def test_a_restarted_peer_is_used_within_a_second_of_serving(redis_url: str) -> None:
    peer_port = free_port()
    env = quietwire_env(
        QW_REDIS_URL=redis_url, QW_GRPC_INSECURE="true", QW_GRPC_PORT=str(peer_port)
    )
    address = Address(peer_port)
    address.back = True
    front = await asyncio.start_server(address.connection, "127.0.0.1", 0)
    target = f"127.0.0.1:{front.sockets[0].getsockname()[1]}"
    processes = [relay(env)]
    try:
        await wait_status(target, SERVING)
        # One long-lived channel, like keyagreement's channel to each relay.
        async with open_channel(target, None) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            address.back = False
            processes[0].kill()
            processes[0].wait(10)
            connecting = asyncio.create_task(keep_connecting(channel))
            for _ in range(REFUSED_ATTEMPTS):
                await asyncio.wait_for(address.refused.get(), 60)
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            processes.append(relay(env))
            await wait_status(f"127.0.0.1:{peer_port}", SERVING)
            address.back = True
            reply = await health.Check(
                health_pb2.HealthCheckRequest(), timeout=1.5, wait_for_ready=True
            )
            assert reply.status == SERVING
    finally:
        front.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
