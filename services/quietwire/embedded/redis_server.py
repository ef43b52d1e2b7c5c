"""The private ``redis-server`` of ``quietwire up``: a Unix socket in the
state directory, a fresh password each run, no TCP port at all, an append-only
file (fsync every second) so that registrations, dialogs and call records
survive a Redis crash, not only users, and files (``dump.rdb`` and the
append-only file hold users' HA1 hashes and locations) readable by us only."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from pathlib import Path

import redis.asyncio as redis

from quietwire.embedded.children import Child

REDIS_BINARY = "redis-server"
#: The Debian package that ships it.
REDIS_PACKAGE = "redis-server"
#: sun_path is 108 bytes on Linux.
MAX_SOCKET_PATH = 107
#: redis-server creates its files (dump.rdb, its log) under this umask: owner only.
REDIS_UMASK = 0o077

log = logging.getLogger(__name__)


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not come up; the message says what to do."""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def make_private(path: Path, mode: int) -> None:
    """Give an existing ``path`` ``mode`` if others could reach it, and say so."""
    try:
        found = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if found & ~mode:
        path.chmod(mode)
        log.warning(
            "was open to others: now private",
            extra={"path": str(path), "mode": f"{found:o}", "now": f"{mode:o}"},
        )


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) owner-only, or make an existing one so."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_private(path, 0o700)


def private_tree(path: Path) -> None:
    """:func:`private_dir`, and every file below it owner-only (an earlier, laxer
    run may have left Redis's dump or append-only files readable)."""
    private_dir(path)
    for inside in sorted(path.rglob("*")):
        make_private(inside, 0o700 if inside.is_dir() else 0o600)


def redis_child(state_dir: Path, password: str) -> tuple[Child, str]:
    """The redis-server child and the URL that reaches it."""
    binary = shutil.which(REDIS_BINARY)
    if binary is None:
        raise RedisUnavailable(
            f"{REDIS_BINARY} not found on PATH: install the Debian package {REDIS_PACKAGE}"
            f" (apt-get install {REDIS_PACKAGE}), or run as root through `make run`"
        )
    directory = state_dir / "redis"
    private_tree(directory)
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
    return Child("redis", [binary, str(config)], umask=REDIS_UMASK), f"unix://{socket}?db=0"


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
