"""``quietwire up``: Redis, a development PKI, the services and demo users.

The services are keyagreement, ``--relays N`` relays (``relay``, ``relay-2``...,
each with its own slice of the UDP port range when there are several) and
``--signaling N`` signaling workers (``signaling``, ``signaling-2``..., sharing
the SIP port with SO_REUSEPORT when there are several: the kernel spreads new
connections over them, one event loop per core). Prints one line starting
``quietwire up:`` once everything is healthy; a child that fails before that
line fails ``up`` with a message naming it. From then on ``up`` supervises its children
(:mod:`quietwire.embedded.supervisor`): one that exits unasked is started again
with backoff, on the gRPC and metrics ports it had (Redis on its socket, with
its append-only file; a relay or a signaling worker under a new registry id,
the dead one's entry removed: keyagreement ends a dead relay's calls at once,
and no dead signaling replica is left for calls to be handed over to), and
``up.json`` shows its new pid and its restarts.

On SIGINT/SIGTERM it ends every live call with a BYE to both phones carrying a
``Reason`` (:mod:`quietwire.embedded.farewell`, through any live signaling
worker), then stops every child it started (services first, Redis last) so
nothing is left running or listening.

Each service binds its gRPC port itself (``QW_GRPC_PORT=0`` the first time:
the kernel picks a free one) and reports it on a pipe (``QW_READY_FD``);
nothing here picks a port and lets it go for a child to take later, which any
other process could take first. Its metrics socket ``up`` binds and hands over
(``QW_METRICS_FD``), and keeps for its restarts. Signaling starts once
keyagreement said where it listens.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import grpc
import redis.asyncio as redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import RedisError

from quietwire.embedded.children import Child, stop_all
from quietwire.embedded.farewell import end_calls
from quietwire.embedded.pki import Pki, ensure_pki
from quietwire.embedded.redis_server import (
    RedisUnavailable,
    private_dir,
    redis_child,
    wait_redis,
    write_private,
)
from quietwire.embedded.supervisor import StartFailed, keep_running
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.channels import open_channel
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.registry import RelayRegistry, ReplicaRegistry
from quietwire.runtime.settings import load_settings
from quietwire.runtime.tls import TlsFiles
from quietwire.signaling.settings import UserAdminSettings
from quietwire.signaling.users import UserStore

log = logging.getLogger(__name__)

#: The most relays ``--relays`` may ask for (each gets a slice of the UDP range).
MAX_RELAYS = 16
#: The most signaling workers ``--signaling`` may ask for (one per core given to it).
MAX_SIGNALING = 16
DEMO_USERS = ("alice", "bob")
#: Seconds a service gets to drain and stop before it is killed.
SERVICE_DRAIN = 5.0
SERVICE_GRACE = 2.0
#: Seconds to take a dead relay or signaling worker out of its registry before
#: leaving it to its TTL.
FORGET_TIMEOUT = 2.0
#: The address every service's gRPC and metrics bind and are reached at.
GRPC_HOST = "127.0.0.1"
#: In the state directory: the settings every child reads.
CONFIG_FILE = "quietwire.yaml"


class UpFailed(StartFailed):
    """The platform (or one child) could not come up; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    state_dir: Path
    sip_host: str = "127.0.0.1"
    sip_port: int = 5061
    startup_timeout: float = 60.0
    relays: int = 1
    signaling: int = 1


class Registry(Protocol):
    async def leave(self, member: str, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Registered:
    """How the runs of a service that heartbeats into a registry are named there."""

    #: The setting carrying a run's id.
    setting: str
    #: Its key in up.json.
    shown_as: str
    #: The registry a dead run is taken out of.
    registry: Callable[[redis.Redis], Registry]


#: Per ``quietwire`` subcommand, the services ``up`` gives a registry id each run.
REGISTRY_IDS = {
    "relay": Registered("QW_RELAY_ID", "relay_id", RelayRegistry),
    "signaling": Registered("QW_REPLICA_ID", "replica_id", ReplicaRegistry),
}


def numbered(service: str, count: int) -> list[str]:
    """``relay``, ``relay-2``, ``relay-3``...: ``count`` runs of ``service``, the first
    keeping the name of a lone one."""
    return [service, *(f"{service}-{n}" for n in range(2, count + 1))]


def relay_names(relays: int) -> list[str]:
    return numbered("relay", relays)


def signaling_names(workers: int) -> list[str]:
    return numbered("signaling", workers)


def service_names(relays: int, signaling: int = 1) -> list[str]:
    """Every service, in the order they start; signaling needs keyagreement's address."""
    return ["keyagreement", *relay_names(relays), *signaling_names(signaling)]


def command(name: str) -> str:
    """The ``quietwire`` subcommand that runs the service ``name`` (``relay-2``: ``relay``)."""
    return name.partition("-")[0]


def relay_port_range(index: int, relays: int) -> tuple[int, int]:
    """The UDP ports of relay number ``index`` (from 0) of ``relays``: the default
    range (``QW_RELAY_PORT_MIN``..``MAX``) cut in equal slices of whole port pairs."""
    low = RelaySettings.model_fields["relay_port_min"].default
    high = RelaySettings.model_fields["relay_port_max"].default
    span = (high - low + 1) // relays // 2 * 2
    first = low + index * span
    return first, first + span - 1


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


async def _all(*steps: Awaitable[None]) -> None:
    """Run ``steps`` together; when one fails, cancel the others, then raise."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _ready_line(child: Child, fd: int) -> dict[str, Any]:
    """The JSON line ``child`` writes on the pipe ``fd`` once it listens."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        line = await reader.readline()
    finally:
        transport.close()
    if not line:  # the pipe closed without a word: the child is gone
        raise UpFailed(f"{child.name} exited with status {await child.ended()}")
    ports: dict[str, Any] = json.loads(line)
    return ports


async def _serving(name: str, channel: grpc.aio.Channel, timeout: float) -> None:
    """Return once the service's readiness is SERVING (the health Watch stream)."""
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    try:
        async for reply in watch:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                log.info("healthy", extra={"child": name})
                return
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise UpFailed(f"{name} not healthy after {timeout:.0f} s") from None
        raise UpFailed(f"{name}: health: {exc.details()}") from None
    finally:
        watch.cancel()
    raise UpFailed(f"{name} stopped answering its health")


@dataclass(slots=True)
class Platform:
    """The children of one ``quietwire up`` run and the files describing them.

    Made by :meth:`create`, which does the file work; the constructor does none.
    """

    options: UpOptions
    state: Path
    lock: TextIO
    pki: Pki
    redis_password: str
    redis: Child
    redis_url: str
    services: dict[str, Child]
    sip_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Each service's ports, as it reported them (``grpc_port``...).
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each service's metrics socket, bound here, handed to every run of it.
    metrics: dict[str, socket.socket] = field(default_factory=dict)
    #: Each relay's id in the relay registry and each signaling worker's in the
    #: replica registry (a new one each run: see _registry_env).
    registry_ids: dict[str, str] = field(default_factory=dict)
    #: True once the ``quietwire up:`` line could be printed.
    started: bool = False

    @classmethod
    async def create(cls, options: UpOptions) -> Platform:
        """Claim the state directory (owner-only), and make or reuse the PKI."""
        state = options.state_dir.resolve()
        private_dir(state)
        lock = _lock(state / "up.lock")
        try:
            pki = await asyncio.to_thread(ensure_pki, state / "pki", options.sip_host)
            redis_password = secrets.token_urlsafe(24)
            redis, redis_url = redis_child(state, redis_password)
        except BaseException:
            lock.close()
            raise
        config = str(state / CONFIG_FILE)
        services = {
            name: Child(
                name,
                [sys.executable, "-m", "quietwire", "--config", config, command(name)],
                {"QW_GRPC_PORT": "0"},
            )
            for name in service_names(options.relays, options.signaling)
        }
        return cls(options, state, lock, pki, redis_password, redis, redis_url, services)

    @property
    def config(self) -> Path:
        return self.state / CONFIG_FILE

    @property
    def status(self) -> Path:
        return self.state / "up.json"

    @property
    def grpc_tls(self) -> TlsFiles:
        return TlsFiles(self.pki.grpc_cert, self.pki.grpc_key, self.pki.ca)

    @property
    def relays(self) -> list[str]:
        return relay_names(self.options.relays)

    @property
    def signaling(self) -> list[str]:
        return signaling_names(self.options.signaling)

    def grpc_address(self, name: str) -> str:
        return f"{GRPC_HOST}:{self.ports[name]['grpc_port']}"

    def live_signaling(self) -> dict[str, str]:
        """Each signaling worker whose process runs: its replica id and gRPC address
        (one restarting may not answer yet: the farewell then asks another)."""
        return {
            self.registry_ids[name]: self.grpc_address(name)
            for name in self.signaling
            if name in self.ports and self.services[name].exited() is None
        }

    def write_config(self) -> None:
        """The shared YAML settings of every child; also serves ``quietwire user``/``calls``."""
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
            "grpc_bind": GRPC_HOST,
            "grpc_tls_cert": str(self.pki.grpc_cert),
            "grpc_tls_key": str(self.pki.grpc_key),
            "grpc_tls_ca": str(self.pki.ca),
            "relay_advertise": host if _is_ip(host) else "127.0.0.1",
            "relay_peer_allow": "127.0.0.0/8,::1",  # phones on this machine may get media
            "sip_secret": self.sip_secret,
            "drain_timeout": SERVICE_DRAIN,
            "shutdown_grace": SERVICE_GRACE,
        }
        if "keyagreement" in self.ports:
            settings["keyagreement_target"] = self.grpc_address("keyagreement")
        write_private(self.config, yaml.safe_dump(settings, sort_keys=False))

    def _registry_env(self, name: str) -> dict[str, str]:
        """A relay's or a signaling worker's id in its registry, a fresh one each run:
        keyagreement tells a relay that died from the one restarted at its address
        by the id, and the dead run's entry can be taken out (:meth:`_forget`)."""
        registry_id = f"{name}-{secrets.token_hex(3)}"
        self.registry_ids[name] = registry_id
        return {REGISTRY_IDS[command(name)].setting: registry_id}

    def _relay_env(self, name: str) -> dict[str, str]:
        """A relay's own settings: its slice of the UDP range when there are several."""
        if self.options.relays == 1:
            return {}
        low, high = relay_port_range(self.relays.index(name), self.options.relays)
        return {"QW_RELAY_PORT_MIN": str(low), "QW_RELAY_PORT_MAX": str(high)}

    def _signaling_env(self) -> dict[str, str]:
        """A signaling worker's own settings: the SIP port shared when there are several."""
        return {"QW_SIP_REUSE_PORT": "true"} if self.options.signaling > 1 else {}

    async def _start_service(self, name: str) -> None:
        """Start one service and wait for the ports it reports.

        Its metrics socket is bound here, on a port the kernel picks, and handed
        over (the same socket to every run); its gRPC port it binds itself (gRPC
        cannot take a socket): a port the kernel picks the first time, that port
        again on a restart, where its peers expect it.
        """
        child = self.services[name]
        if name not in self.metrics:
            self.metrics[name] = socket.create_server((GRPC_HOST, 0))
        metrics = self.metrics[name].fileno()
        read_end, write_end = os.pipe()
        env = {"QW_READY_FD": str(write_end), "QW_METRICS_FD": str(metrics)}
        if name in self.ports:
            env["QW_GRPC_PORT"] = str(self.ports[name]["grpc_port"])
        if command(name) in REGISTRY_IDS:
            env |= self._registry_env(name)
        if name in self.relays:
            env |= self._relay_env(name)
        if name in self.signaling:
            env |= self._signaling_env()
        try:
            await child.start(env, pass_fds=(write_end, metrics))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.ports[name] = await _ready_line(child, read_end)

    async def _restart_service(self, name: str) -> None:
        port = self.ports[name]["grpc_port"]
        if name in self.registry_ids:
            await self._forget(name)
        try:
            async with asyncio.timeout(self.options.startup_timeout):
                await self._start_service(name)
        except UpFailed as exc:  # most likely: another program took its port meanwhile
            raise StartFailed(f"{exc} before it listened again on its gRPC port {port}") from None

    async def _forget(self, name: str) -> None:
        """Take the dead run of ``name`` out of its registry, as its heartbeat's TTL
        would some seconds later. A relay: no new call is planned on it meanwhile,
        and keyagreement ends its calls at its next look ("relay lost"). A signaling
        worker: no request is handed over to it, nor a call's end asked of it."""
        client = redis_client(load_settings(UserAdminSettings, self.config))
        registry = REGISTRY_IDS[command(name)].registry(client)
        try:
            async with asyncio.timeout(FORGET_TIMEOUT):
                await registry.leave(self.registry_ids[name])
        except (RedisError, OSError, TimeoutError) as exc:  # Redis away too: the TTL will do it
            log.warning(
                f"dead {command(name)} left in the registry",
                extra={"child": name, "error": type(exc).__name__},
            )
        finally:
            await client.aclose()

    async def _start_redis(self) -> None:
        await self.redis.start()
        probe = redis_client(load_settings(UserAdminSettings, self.config))
        try:
            await wait_redis(probe, self.redis, timeout=15)
        finally:
            await probe.aclose()

    async def _restart_redis(self) -> None:
        try:
            await self._start_redis()
        except RedisUnavailable as exc:
            raise StartFailed(str(exc)) from None

    async def _wait_serving(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        channels = {
            name: open_channel(self.grpc_address(name), self.grpc_tls) for name in self.services
        }
        try:
            await _all(
                *(
                    _serving(name, channel, max(0.1, deadline - loop.time()))
                    for name, channel in channels.items()
                )
            )
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

    def _service_status(self, name: str, child: Child) -> dict[str, Any]:
        status: dict[str, Any] = {
            "pid": child.pid,
            "grpc": self.grpc_address(name),
            "metrics": f"{GRPC_HOST}:{self.ports[name]['metrics_port']}",
            "restarts": child.restarts,
        }
        if name in self.registry_ids:
            status[REGISTRY_IDS[command(name)].shown_as] = self.registry_ids[name]
        if name in self.relays and self.options.relays > 1:
            low, high = relay_port_range(self.relays.index(name), self.options.relays)
            status["media_ports"] = f"{low}-{high}"
        return status

    def write_status(self) -> None:
        """``up.json``: each child's pid and restarts, each service's addresses;
        replaced whole, so a reader never sees half of it."""
        status = {
            "sip_uri": sip_uri(self.options.sip_host, self.options.sip_port),
            "ca": str(self.pki.ca),
            "config": str(self.config),
            "redis": {
                "pid": self.redis.pid,
                "url": self.redis_url,
                "restarts": self.redis.restarts,
            },
            "services": {
                name: self._service_status(name, child) for name, child in self.services.items()
            },
        }
        partial = self.status.with_suffix(".json.new")
        partial.write_text(json.dumps(status, indent=2), encoding="utf-8")
        partial.replace(self.status)

    async def start(self) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.startup_timeout
        self.write_config()
        await self._start_redis()
        try:
            async with asyncio.timeout_at(deadline):
                await _all(*(self._start_service(name) for name in ["keyagreement", *self.relays]))
                self.write_config()  # now with keyagreement's address, for signaling and `calls`
                await _all(*(self._start_service(name) for name in self.signaling))
        except TimeoutError:
            waiting = ", ".join(name for name in self.services if name not in self.ports)
            raise UpFailed(
                f"not listening after {self.options.startup_timeout:.0f} s: {waiting}"
            ) from None
        await self._wait_serving(deadline)
        try:
            users = await self.demo_users()
        except (RedisError, OSError) as exc:
            raise UpFailed(f"cannot create the demo users in Redis: {exc}") from exc
        self.write_status()
        self.started = True
        return users

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep every child running until ``stop``."""
        keepers: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        keepers.append(
            asyncio.ensure_future(keep_running(self.redis, self._restart_redis, self.write_status))
        )
        for name, child in self.services.items():
            restart = functools.partial(self._restart_service, name)
            keepers.append(asyncio.ensure_future(keep_running(child, restart, self.write_status)))
        try:
            done, _ = await asyncio.wait(keepers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
        for keeper in done:
            keeper.result()  # a keeper ends only by raising: let it be seen

    async def stop(self) -> None:
        """End the calls (if the platform ever came up), then stop every child."""
        workers = self.live_signaling()
        if self.started and "keyagreement" in self.ports and workers:
            await end_calls(self.grpc_address("keyagreement"), workers, self.grpc_tls)
        await stop_all(list(self.services.values()), SERVICE_DRAIN + SERVICE_GRACE + 5)
        await stop_all([self.redis], 15)
        for held in self.metrics.values():
            held.close()
        self.status.unlink(missing_ok=True)
        self.lock.close()


async def up(options: UpOptions) -> int:
    platform = await Platform.create(options)
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
        await platform.supervise(stop)
        return 0
    finally:
        stopper.cancel()
        await asyncio.gather(startup, stopper, return_exceptions=True)
        await platform.stop()
        log.info("stopped")
