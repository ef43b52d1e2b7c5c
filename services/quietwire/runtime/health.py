"""Honest health (gRPC health protocol, ``grpc.health.v1``).

- ``""`` and each served service name: **readiness**, SERVING only while every
  dependency check passes (Redis reachable, listener bound, ports left...).
- ``liveness``: SERVING as long as the event loop answers at all, so a Redis
  blip marks pods unready without restarting them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import Gauge

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ReadinessCheck = Callable[[], Awaitable[bool]]

READY = Gauge("quietwire_ready", "1 while every readiness check passes")
CHECK_OK = Gauge("quietwire_dependency_up", "1 while a dependency check passes", ["check"])

log = logging.getLogger(__name__)


class HealthMonitor:
    """Runs readiness checks every ``interval`` seconds and publishes the result."""

    def __init__(
        self,
        servicer: HealthServicer,
        services: Sequence[str],
        checks: Mapping[str, ReadinessCheck],
        interval: float = 2.0,
    ) -> None:
        self.servicer = servicer
        self.services = ("", *services)
        self.checks = dict(checks)
        self.interval = interval
        self.ready: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.servicer.set(LIVENESS, SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def check_once(self) -> bool:
        failed = []
        for name, check in self.checks.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=self.interval * 2)
            except (TimeoutError, OSError):
                ok = False
            CHECK_OK.labels(name).set(1 if ok else 0)
            if not ok:
                failed.append(name)
        ready = not failed
        if ready != self.ready:
            if ready:
                log.info("ready")
            else:
                log.warning("not ready", extra={"failed_checks": failed})
            self.ready = ready
        READY.set(1 if ready else 0)
        for service in self.services:
            await self.servicer.set(service, SERVING if ready else NOT_SERVING)
        return ready

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()

    async def stop(self) -> None:
        """Stop checking and answer NOT_SERVING for everything from now on."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.servicer.enter_graceful_shutdown()


async def serving_status(channel: grpc.aio.Channel, service: str = "", timeout: float = 2.0) -> int:
    """The peer's health status for ``service``; UNKNOWN if it cannot be asked."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError:
        return int(health_pb2.HealthCheckResponse.UNKNOWN)
    return int(reply.status)
