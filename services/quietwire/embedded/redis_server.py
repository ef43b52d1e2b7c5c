"""The private ``redis-server`` of ``quietwire up``: a Unix socket in the
state directory, a fresh password each run, no TCP port at all, and an
append-only file (fsync every second) so that registrations, dialogs and call
records survive a Redis crash, not only users."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import redis.asyncio as redis

from quietwire.embedded.children import Child

REDIS_BINARY = "redis-server"
#: The Debian package that ships it.
REDIS_PACKAGE = "redis-server"
#: sun_path is 108 bytes on Linux.
MAX_SOCKET_PATH = 107


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not come up; the message says what to do."""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def redis_child(state_dir: Path, password: str) -> tuple[Child, str]:
    """The redis-server child and the URL that reaches it."""
    binary = shutil.which(REDIS_BINARY)
    if binary is None:
        raise RedisUnavailable(
            f"{REDIS_BINARY} not found on PATH: install the Debian package {REDIS_PACKAGE}"
            f" (apt-get install {REDIS_PACKAGE}), or run as root through `make run`"
        )
    directory = state_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One socket name per run: a Redis still exiting from an earlier run removes
    # its own socket file, never ours.
    socket = directory / f"redis-{os.getpid()}.sock"
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise RedisUnavailable(f"state directory path too long for a Unix socket: {socket}")
    config = directory / "redis.conf"
    write_private(
        config,
        "\n".join(
            [
                "port 0",
                f"unixsocket {socket}",
                "unixsocketperm 700",
                f"dir {directory}",
                "dbfilename dump.rdb",
                "save 60 1",
                "appendonly yes",
                "appendfsync everysec",
                "daemonize no",
                f"logfile {directory / 'redis.log'}",
                f"requirepass {password}",
                "",
            ]
        ),
    )
    return Child("redis", [binary, str(config)]), f"unix://{socket}?db=0"


async def wait_redis(client: redis.Redis, child: Child, timeout: float) -> None:
    """Return once Redis answers PING; raise if the child died or time ran out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if (status := child.exited()) is not None:
            raise RedisUnavailable(f"redis-server exited with status {status}; see its redis.log")
        try:
            if await client.ping():
                return
        except (redis.RedisError, OSError):
            pass
        if loop.time() > deadline:
            raise RedisUnavailable(f"redis-server did not answer within {timeout:.0f} s")
        await asyncio.sleep(0.05)
