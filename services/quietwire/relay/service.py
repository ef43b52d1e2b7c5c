"""``quietwire relay``: media relay ports, forwarding, and the Relay gRPC service.

Registers itself in Redis (address, capacity, load, draining) every few
seconds; keeps what its legs learn of their phones there, so that another
relay can take a call over (:mod:`quietwire.relay.memory`); reclaims calls
that carried no packet for ``QW_RELAY_MEDIA_TIMEOUT`` (their signaling
vanished); on SIGTERM stops taking calls and keeps forwarding until they end
or the drain budget runs out. On Kubernetes it may take its advertised address
from its Node and publish its load as its pod's deletion cost
(:mod:`quietwire.relay.kube`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Mapping

import grpc
from kubernetes.aio import client as kube_client

from quietwire.relay import kube
from quietwire.relay.kernel import KernelPathError, KernelPaths
from quietwire.relay.legs import Event, EventKind
from quietwire.relay.memory import LegMemoryWriter
from quietwire.relay.metrics import publish_capacity
from quietwire.relay.ports import PortPool
from quietwire.relay.servicer import RelayServicer
from quietwire.relay.sessions import Relay
from quietwire.relay.settings import RelaySettings
from quietwire.rpc.relay.v1 import relay_pb2_grpc
from quietwire.runtime.errorlog import ErrorLog
from quietwire.runtime.health import ReadinessCheck
from quietwire.runtime.registry import RelayEntry, RelayRegistry
from quietwire.runtime.service import RedisBackedService
from quietwire.runtime.settings import SettingsError, env_name
from quietwire.runtime.streams import stream_log_fields

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 3.0
EXPIRE_EVERY = 1.0


#: The log line of each media event (LEG_STATS, every few minutes of a call: debug).
EVENT_LINES = {
    EventKind.LATCHED: (logging.INFO, "leg latched"),
    EventKind.ZRTP_MESSAGE: (logging.DEBUG, "zrtp message seen"),
    EventKind.MEDIA_STARTED: (logging.INFO, "media started"),
    EventKind.MEDIA_TIMEOUT: (logging.INFO, "leg timed out"),
    EventKind.LEG_STATS: (logging.DEBUG, "call still carries media"),
}
#: ZRTP messages worth a line at info (RFC 6189 section 5): the Hello whose hash
#: keyagreement checks, the end of the handshake, and its failures.
NOTABLE_ZRTP = frozenset({"Hello", "Conf2ACK", "Error", "GoClear"})


def log_event(event: Event) -> None:
    """One line per media event, with its call's Call-ID like every line about it."""
    level, message = EVENT_LINES[event.kind]
    extra = {**stream_log_fields(event.call_id), "side": event.side.name.lower()}
    if event.kind is EventKind.ZRTP_MESSAGE:
        extra["zrtp_message"] = event.zrtp_message
        if event.zrtp_message in NOTABLE_ZRTP:
            level = logging.INFO
    log.log(level, message, extra=extra)


class RelayService(RedisBackedService):
    grpc_services: tuple[str, ...] = ("quietwire.relay.v1.Relay",)

    def __init__(
        self, settings: RelaySettings, kube_config: kube_client.Configuration | None = None
    ) -> None:
        """``kube_config`` reaches the Kubernetes API; default: the pod's service account."""
        super().__init__(settings)
        self.settings = settings
        self.relay_id = settings.relay_id or f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"
        pool = PortPool(settings.relay_bind, settings.relay_port_min, settings.relay_port_max)
        self.engine = Relay(pool, self._emit, policy=settings.peer_policy)
        self.loop_errors = ErrorLog(log)
        self.memory = LegMemoryWriter(
            self.redis, self.relay_id, self.engine.calls, self.loop_errors
        )
        self.engine.memory = self.memory
        self.servicer = RelayServicer(self.engine, self.relay_id, settings.relay_advertise)
        self.registry = RelayRegistry(self.redis)
        self.capacity = settings.relay_capacity or pool.size // 2
        self._tasks: list[asyncio.Task[None]] = []
        self._kube_config = kube_config
        self.kube: kube_client.ApiClient | None = None
        self.deletion_cost: kube.DeletionCost | None = None

    def _emit(self, event: Event) -> None:
        log_event(event)
        self.servicer.publish(event)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        relay_pb2_grpc.add_RelayServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        publish_capacity(self.engine.pool, self.capacity)
        if self.settings.uses_kube_api:
            await self._start_kube()
        if self.settings.relay_kernel_forwarding:
            await self._start_kernel()
        self._tasks = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._expire()),
            asyncio.create_task(self.memory.run()),
        ]

    async def _start_kube(self) -> None:
        settings = self.settings
        self.kube = kube_client.ApiClient(self._kube_config or kube.in_cluster())
        if settings.relay_advertise_from_node and settings.kube_node_name:
            try:
                address = await kube.node_address(
                    self.kube, settings.kube_node_name, settings.relay_advertise_from_node
                )
            except kube.KubeError as exc:
                raise SettingsError(f"{env_name('relay_advertise_from_node')}: {exc}") from exc
            log.info("advertising the node's address", extra={"node": settings.kube_node_name})
            self.servicer.advertise = address
        if settings.relay_pod_deletion_cost and settings.kube_namespace and settings.kube_pod_name:
            self.deletion_cost = kube.DeletionCost(
                self.kube, settings.kube_namespace, settings.kube_pod_name
            )

    async def _start_kernel(self) -> None:
        settings = self.settings
        kernel = KernelPaths(settings.relay_bind, settings.relay_port_min, settings.relay_port_max)
        try:
            await kernel.start()
        except (KernelPathError, OSError) as exc:
            await kernel.close()
            raise SettingsError(f"{env_name('relay_kernel_forwarding')}: {exc}") from exc
        self.engine.paths.kernel = kernel
        log.info("settled calls are forwarded by the kernel", extra={"table": kernel.table})

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        async def ports_left() -> bool:
            return self.engine.pool.available > 0 and not self.engine.draining

        return {**super().readiness_checks(), "relay-ports": ports_left}

    def _entry(self) -> RelayEntry:
        return RelayEntry(
            self.relay_id,
            self.settings.grpc_peer_address,
            self.servicer.advertise,
            self.capacity,
            len(self.engine.calls),
            self.engine.draining,
            self.servicer.started,
        )

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.registry.heartbeat(self._entry())
            except Exception as exc:  # Redis away: counted, logged once a minute, tried again
                self.loop_errors.record("relay heartbeat", exc)
            if self.deletion_cost is not None:
                try:
                    await self.deletion_cost.publish(len(self.engine.calls))
                except kube.KubeError as exc:
                    self.loop_errors.record("pod deletion cost", exc)
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            kernel = self.engine.paths.kernel
            if kernel is not None:
                try:
                    self.engine.absorb(await kernel.counters())
                except Exception as exc:  # read again next second
                    self.loop_errors.record("kernel counters", exc)
            for call_id in self.engine.expire(self.settings.relay_media_timeout):
                log.info("call reclaimed by media timeout", extra=stream_log_fields(call_id))

    async def drain(self, timeout: float) -> None:
        self.engine.draining = True
        with contextlib.suppress(Exception):
            await self.registry.heartbeat(self._entry())
        deadline = time.monotonic() + timeout
        # Polling: calls end by Release or by the media-timeout loop, not by an event.
        while self.engine.calls and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.close()
        with contextlib.suppress(Exception):
            await self.registry.leave(self.relay_id)
        if self.kube is not None:
            await self.kube.close()  # type: ignore[no-untyped-call]
        await super().close()
