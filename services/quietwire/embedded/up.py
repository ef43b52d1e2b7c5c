"""``quietwire up``: Redis, a development PKI, the three services and demo users.

Prints one line starting ``quietwire up:`` once everything is healthy, then
runs until SIGINT/SIGTERM, when it stops every child it started (services
first, Redis last) so nothing is left running or listening. A service that
dies stops the whole platform with an error rather than leaving it half up.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from redis.exceptions import RedisError

from quietwire.embedded.children import Child, stop_all
from quietwire.embedded.pki import Pki, ensure_pki
from quietwire.embedded.redis_server import redis_child, wait_redis, write_private
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import SERVING, serving_status
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.settings import load_settings
from quietwire.runtime.tls import TlsFiles
from quietwire.signaling.settings import UserAdminSettings
from quietwire.signaling.users import UserStore

log = logging.getLogger(__name__)

#: Started in this order, stopped all at once.
SERVICES = ("keyagreement", "relay", "signaling")
DEMO_USERS = ("alice", "bob")
#: Seconds a service gets to drain and stop before it is killed.
SERVICE_DRAIN = 5.0
SERVICE_GRACE = 2.0


class UpFailed(RuntimeError):
    """The platform could not come up; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    state_dir: Path
    sip_host: str = "127.0.0.1"
    sip_port: int = 5061
    startup_timeout: float = 60.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def sip_uri(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"sip:{shown}:{port};transport=tls"


def _lock(path: Path) -> TextIO:
    """Hold the state directory for this run; a second ``up`` on it fails clearly."""
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise UpFailed(f"{path.parent} is in use by another quietwire up (pid {owner})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class Platform:
    """The children of one ``quietwire up`` run and the files describing them."""

    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.state = options.state_dir.resolve()
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = _lock(self.state / "up.lock")
        self.config = self.state / "quietwire.yaml"
        self.status = self.state / "up.json"
        self.pki: Pki = ensure_pki(self.state / "pki", options.sip_host)
        self.redis_password = secrets.token_urlsafe(24)
        self.sip_secret = secrets.token_urlsafe(32)
        self.redis, self.redis_url = redis_child(self.state, self.redis_password)
        self.ports = {name: (free_port(), free_port()) for name in SERVICES}
        self.services = [self._service_child(name) for name in SERVICES]

    def _service_child(self, name: str) -> Child:
        grpc_port, metrics_port = self.ports[name]
        return Child(
            name,
            [sys.executable, "-m", "quietwire", "--config", str(self.config), name],
            {"QW_GRPC_PORT": str(grpc_port), "QW_METRICS_PORT": str(metrics_port)},
        )

    def write_config(self) -> None:
        """The shared YAML settings of every child; also serves ``quietwire user``."""
        host = self.options.sip_host
        settings: dict[str, Any] = {
            "log_level": "info",
            "redis_url": self.redis_url,
            "redis_password": self.redis_password,
            "sip_domain": host,
            "sip_bind": host if _is_ip(host) else "0.0.0.0",  # noqa: S104
            "sip_port": self.options.sip_port,
            "sip_tls_cert": str(self.pki.sip_cert),
            "sip_tls_key": str(self.pki.sip_key),
            "grpc_tls_cert": str(self.pki.grpc_cert),
            "grpc_tls_key": str(self.pki.grpc_key),
            "grpc_tls_ca": str(self.pki.ca),
            "keyagreement_target": f"127.0.0.1:{self.ports['keyagreement'][0]}",
            "relay_advertise": host if _is_ip(host) else "127.0.0.1",
            "relay_peer_allow": "127.0.0.0/8,::1",  # phones on this machine may get media
            "sip_secret": self.sip_secret,
            "drain_timeout": SERVICE_DRAIN,
            "shutdown_grace": SERVICE_GRACE,
        }
        write_private(self.config, yaml.safe_dump(settings, sort_keys=False))

    @property
    def grpc_tls(self) -> TlsFiles:
        return TlsFiles(self.pki.grpc_cert, self.pki.grpc_key, self.pki.ca)

    def check_children(self) -> None:
        for child in (self.redis, *self.services):
            if (status := child.exited()) is not None:
                raise UpFailed(f"{child.name} exited with status {status}")

    async def wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.startup_timeout
        pending = set(SERVICES)
        channels = {
            n: open_channel(f"127.0.0.1:{self.ports[n][0]}", self.grpc_tls) for n in SERVICES
        }
        try:
            while pending:
                self.check_children()
                for name in sorted(pending):
                    if await serving_status(channels[name]) == SERVING:
                        log.info("healthy", extra={"child": name})
                        pending.discard(name)
                if loop.time() > deadline:
                    raise UpFailed(
                        f"not healthy after {self.options.startup_timeout:.0f} s: "
                        + ", ".join(sorted(pending))
                    )
                if pending:
                    await asyncio.sleep(0.2)
        finally:
            for channel in channels.values():
                await channel.close(None)

    async def demo_users(self) -> dict[str, str]:
        """Demo users and their passwords, made once per state directory."""
        path = self.state / "demo-users.json"
        try:
            users: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            users = {name: secrets.token_urlsafe(9) for name in DEMO_USERS}
            write_private(path, json.dumps(users))
        settings = load_settings(UserAdminSettings, self.config)
        client = redis_client(settings)
        try:
            store = UserStore(client, settings.sip_domain, settings.digest_algorithms)
            for name, password in users.items():
                await store.put(name, password)
        finally:
            await client.aclose()
        return users

    def write_status(self) -> None:
        status = {
            "sip_uri": sip_uri(self.options.sip_host, self.options.sip_port),
            "ca": str(self.pki.ca),
            "config": str(self.config),
            "redis": {"pid": self.redis.pid, "url": self.redis_url},
            "services": {
                child.name: {
                    "pid": child.pid,
                    "grpc": f"127.0.0.1:{self.ports[child.name][0]}",
                    "metrics": f"127.0.0.1:{self.ports[child.name][1]}",
                }
                for child in self.services
            },
        }
        self.status.write_text(json.dumps(status, indent=2), encoding="utf-8")

    async def start(self) -> dict[str, str]:
        self.write_config()
        self.redis.start()
        probe = redis_client(load_settings(UserAdminSettings, self.config))
        try:
            await wait_redis(probe, self.redis, timeout=15)
        finally:
            await probe.aclose()
        for child in self.services:
            child.start()
        await self.wait_healthy()
        try:
            users = await self.demo_users()
        except (RedisError, OSError) as exc:
            raise UpFailed(f"cannot create the demo users in Redis: {exc}") from exc
        self.write_status()
        return users

    def stop(self) -> None:
        stop_all(self.services, SERVICE_DRAIN + SERVICE_GRACE + 5)
        stop_all([self.redis], 15)
        self.status.unlink(missing_ok=True)

    async def watch(self, stop: asyncio.Event) -> None:
        """Return on ``stop``; raise :class:`UpFailed` if a child dies first."""
        while not stop.is_set():
            self.check_children()
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                continue


async def up(options: UpOptions) -> int:
    platform = Platform(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    startup = asyncio.create_task(platform.start())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            startup.cancel()
            return 0
        users = startup.result()
        credentials = ",".join(f"{name}:{password}" for name, password in users.items())
        print(
            f"quietwire up: {sip_uri(options.sip_host, options.sip_port)}"
            f" ca={platform.pki.ca} users={credentials} config={platform.config}",
            flush=True,
        )
        await platform.watch(stop)
        return 0
    finally:
        stopper.cancel()
        await asyncio.gather(startup, stopper, return_exceptions=True)
        platform.stop()
        log.info("stopped")
