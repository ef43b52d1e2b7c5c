"""The one service skeleton every quietwire service runs in.

settings → dependencies → gRPC server with health → run until a signal →
NOT_SERVING → drain → stop with grace → close. A second SIGTERM/SIGINT during
shutdown forces: calls are cut and the process exits at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from quietwire.runtime.channels import server_options
from quietwire.runtime.health import HealthMonitor, ReadinessCheck
from quietwire.runtime.interceptors import CallIdServerInterceptor
from quietwire.runtime.metrics import start_metrics
from quietwire.runtime.redisclient import Replication, redis_client, redis_ready
from quietwire.runtime.settings import CommonSettings, ServiceSettings, SettingsError, env_name
from quietwire.runtime.tls import TlsFiles, server_credentials

log = logging.getLogger(__name__)

#: Exit status when a second signal cut the graceful shutdown short.
EXIT_FORCED = 130

S = TypeVar("S", bound=ServiceSettings)


class Service(Protocol):
    """What a service gives the skeleton."""

    #: Full gRPC service names it serves (for health), e.g. ``quietwire.relay.v1.Relay``.
    grpc_services: tuple[str, ...]

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]: ...

    async def drain(self, timeout: float) -> None:
        """Stop taking new work; return when work in progress ends or ``timeout`` passes."""

    async def close(self) -> None: ...


class RedisBackedService:
    """Base of services whose one hard dependency is Redis.

    Gives the :class:`quietwire.runtime.service.Service` defaults: readiness
    follows Redis, nothing to drain, the pool closed at the end.
    """

    grpc_services: tuple[str, ...] = ()

    def __init__(self, settings: CommonSettings) -> None:
        self.redis = redis_client(settings)
        self.replication = Replication.of(settings)

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


def _bound(server: grpc.aio.Server, address: str, setting: str, tls: TlsFiles | None) -> int:
    """Bind ``server`` to ``address``; a failure is a :class:`SettingsError` naming ``setting``."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except (RuntimeError, OSError) as exc:
        raise SettingsError(f"cannot listen on {setting} = {address}: {exc}") from exc
    if port == 0:
        raise SettingsError(f"cannot listen on {setting} = {address} (in use?)")
    return port


def build_server(settings: ServiceSettings) -> tuple[grpc.aio.Server, int]:
    """A ``grpc.aio`` server with our interceptors, bound to ``QW_GRPC_BIND:QW_GRPC_PORT``."""
    server = grpc.aio.server(
        interceptors=[CallIdServerInterceptor()],
        options=(("grpc.so_reuseport", 0), *server_options()),
    )
    setting = f"{env_name('grpc_bind')}:{env_name('grpc_port')}"
    return server, _bound(server, settings.grpc_address, setting, settings.grpc_tls)


def build_health_server(
    settings: ServiceSettings, health: HealthServicer
) -> tuple[grpc.aio.Server, int] | None:
    """The plain-text health-only server on ``QW_HEALTH_PORT`` (None when it is 0).

    Kubernetes' native gRPC probes cannot speak TLS; this port answers the
    health service and nothing else, so the mTLS port stays closed to them.
    """
    if settings.health_port == 0:
        return None
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    setting = f"{env_name('health_bind')}:{env_name('health_port')}"
    return server, _bound(server, settings.health_address, setting, None)


class _Signals:
    """Counts SIGTERM/SIGINT: the first asks to stop, the second forces."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            log.warning("second signal: forcing shutdown", extra={"signal": sig.name})
            self.force.set()
        else:
            log.info("stopping", extra={"signal": sig.name})
            self.stop.set()

    async def unless_forced(self, step: Awaitable[object]) -> bool:
        """Run ``step``; False if a second signal came first."""
        task = asyncio.ensure_future(step)
        forced = asyncio.ensure_future(self.force.wait())
        await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False


def report_ready(fd: int, ports: Mapping[str, int | None]) -> None:
    """One JSON line of ``ports`` on ``fd`` (``QW_READY_FD``), which is then closed."""
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(ports) + "\n")


async def serve(name: str, settings: S, make_service: Callable[[S], Service]) -> int:
    """Run the service ``make_service`` builds until a signal; returns the exit status.

    The service is built once the gRPC port is bound, from settings that carry
    the bound port (``QW_GRPC_PORT=0`` lets the kernel pick one), so that what
    it advertises to its peers is where it listens.
    """
    log.info("starting", extra={"settings": settings.redacted()})
    server, port = build_server(settings)
    if settings.grpc_port == 0:
        settings = settings.model_copy(update={"grpc_port": port})
    service = make_service(settings)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service.add_to_server(server)
    probes = build_health_server(settings, health)
    try:
        metrics = start_metrics(
            name, settings.metrics_bind, settings.metrics_port, settings.metrics_fd
        )
    except OSError as exc:
        setting = f"{env_name('metrics_bind')}:{env_name('metrics_port')}"
        address = f"{settings.metrics_bind}:{settings.metrics_port}"
        raise SettingsError(f"cannot listen on {setting} = {address}: {exc.strerror}") from None
    signals = _Signals()
    signals.install()
    monitor = HealthMonitor(health, service.grpc_services, service.readiness_checks())
    try:
        await service.start()
        await server.start()
        if probes is not None:
            await probes[0].start()
        await monitor.start()
        gc.freeze()  # start-up's objects live as long as the process: keep full collections short
        ports = {
            "grpc_port": port,
            "health_port": probes[1] if probes is not None else None,
            "metrics_port": metrics.port if metrics is not None else None,
        }
        log.info("listening", extra=ports)
        if settings.ready_fd is not None:
            report_ready(settings.ready_fd, ports)
        await signals.stop.wait()
        await monitor.stop()
        graceful = await signals.unless_forced(service.drain(settings.drain_timeout))
        graceful = graceful and await signals.unless_forced(server.stop(settings.shutdown_grace))
        if not graceful:
            await server.stop(None)
        log.info("stopped", extra={"graceful": graceful})
        return 0 if graceful else EXIT_FORCED
    finally:
        if probes is not None:
            await probes[0].stop(None)
        await service.close()
        if metrics is not None:
            metrics.close()
