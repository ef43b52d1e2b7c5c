"""``quietwire signaling``: one SIP-over-TLS front end replica.

It listens for phones (TLS, certificate reloaded when its files change),
registers and authenticates them, proxies their calls, heartbeats in Redis so
other replicas can hand it messages for the flows it holds, and serves the
Signaling gRPC service for those handovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path

import grpc

from quietwire.protocols.clock import MonotonicClock
from quietwire.protocols.sip.nonces import NonceMint
from quietwire.rpc.signaling.v1 import signaling_pb2_grpc
from quietwire.runtime import tls
from quietwire.runtime.errorlog import ErrorLog
from quietwire.runtime.health import ReadinessCheck
from quietwire.runtime.outbox import EndOutbox
from quietwire.runtime.registry import ReplicaRegistry
from quietwire.runtime.service import RedisBackedService
from quietwire.runtime.settings import SettingsError, env_name
from quietwire.signaling.admission import ConnectionCaps
from quietwire.signaling.auth import Authenticator
from quietwire.signaling.contexts import ServerTable
from quietwire.signaling.core import SipCore
from quietwire.signaling.dialogs import DIALOG_TTL, DialogStore
from quietwire.signaling.flows import DatagramListener, FlowTable, StreamLimits, StreamListener
from quietwire.signaling.limits import SourceLimiter
from quietwire.signaling.locations import LocationStore
from quietwire.signaling.locator import Locator
from quietwire.signaling.lockout import Lockout
from quietwire.signaling.media import KeyAgreementPlanner, Passthrough
from quietwire.signaling.migration import CallMover
from quietwire.signaling.peers import GrpcPeers
from quietwire.signaling.proxy import Proxy
from quietwire.signaling.registrar import MAX_EXPIRES, Registrar
from quietwire.signaling.routing import ProxyAddress
from quietwire.signaling.servicer import SignalingServicer
from quietwire.signaling.settings import SignalingSettings
from quietwire.signaling.targets import Router
from quietwire.signaling.tokens import RouteTokens
from quietwire.signaling.users import UserStore

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 3.0
#: Seconds a UDP peer without bindings is remembered after its last datagram.
UDP_IDLE = 120.0


def sip_tls_context(settings: SignalingSettings) -> ssl.SSLContext:
    """Server-side TLS for SIP (RFC 5630): TLS 1.2 or newer, modern ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_certificate(context, settings)
    return context


def load_certificate(context: ssl.SSLContext, settings: SignalingSettings) -> None:
    try:
        context.load_cert_chain(settings.sip_tls_cert, settings.sip_tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"invalid setting {env_name('sip_tls_cert')}/{env_name('sip_tls_key')}:"
            f" cannot load the certificate and key: {exc}"
        ) from exc
    tls.publish_expiry("sip", Path(settings.sip_tls_cert))


def _mtimes(*paths: Path) -> tuple[float, ...]:
    return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)


def listening_ports(settings: SignalingSettings) -> dict[str, int]:
    """Our port per transport: what our Via and Record-Route name."""
    return {
        "TLS": settings.sip_port,
        "TCP": settings.sip_tcp_port or settings.sip_port,
        "UDP": settings.sip_udp_port or settings.sip_port,
    }


class SignalingService(RedisBackedService):
    grpc_services: tuple[str, ...] = ("quietwire.signaling.v1.Signaling",)

    def __init__(self, settings: SignalingSettings) -> None:
        self.settings = settings
        self.tls = sip_tls_context(settings)
        super().__init__(settings)
        self.replica = settings.replica_id or f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"
        secret = (
            settings.sip_secret.get_secret_value().encode()
            if settings.sip_secret
            else os.urandom(32)
        )
        clock = MonotonicClock()
        self.loop_errors = ErrorLog(log, clock)
        self.media: KeyAgreementPlanner | Passthrough = (
            KeyAgreementPlanner(
                settings.keyagreement_target,
                settings.grpc_tls,
                self.replica,
                EndOutbox(self.redis),
            )
            if settings.sip_media == "relay"
            else Passthrough()
        )
        self.flows = FlowTable(self.replica)
        self.users = UserStore(self.redis, settings.sip_domain, settings.digest_algorithms)
        self.locations = LocationStore(self.redis, MAX_EXPIRES, self.replication)
        self.replicas = ReplicaRegistry(self.redis)
        self.peers = GrpcPeers(self.replicas, settings.grpc_tls)
        lockout = Lockout(self.redis, settings.sip_domain, secret, settings.lockout_policy, clock)
        auth = Authenticator(
            self.users, self.redis, NonceMint(secret), lockout, settings.digest_algorithms
        )
        self.proxy = Proxy(
            address=ProxyAddress(
                settings.sip_domain.lower(),
                settings.sip_domain,
                listening_ports(settings),
                self.replica,
            ),
            auth=auth,
            locator=Locator(self.replica, self.users, self.locations, self.replicas, self.flows),
            dialogs=DialogStore(self.redis, self.replication, clock),
            router=Router(self.replica, self.flows, self.peers),
            media=self.media,
            tokens=RouteTokens(secret, settings.sip_domain, listening_ports(settings), DIALOG_TTL),
            servers=ServerTable(
                settings.sip_max_transactions, settings.sip_max_transactions_per_source
            ),
            clock=clock,
        )
        self.mover = CallMover(self.proxy.dialogs, self.proxy.uac, self.proxy.address.via)
        registrar = Registrar(settings.sip_domain, auth, self.locations, self.replica)
        limiter = SourceLimiter(clock, settings.sip_rate_limit, settings.sip_rate_burst)
        self.core = SipCore(registrar, self.proxy, limiter)
        limits = StreamLimits(
            max_connections=settings.sip_max_connections,
            max_connections_per_source=settings.sip_max_connections_per_source,
            preauth_body_bytes=settings.sip_preauth_body_bytes,
            message_timeout=settings.sip_message_timeout,
        )
        caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_source)
        shared = settings.sip_reuse_port
        self.listener = StreamListener(
            self.flows, self.core.on_message, self.tls, limits, caps, reuse_port=shared
        )
        #: Plain TCP, for phones without TLS: off unless QW_SIP_TCP_PORT is set.
        self.tcp_listener = (
            StreamListener(self.flows, self.core.on_message, None, limits, caps, reuse_port=shared)
            if settings.sip_tcp_port
            else None
        )
        #: UDP, likewise off unless QW_SIP_UDP_PORT is set. A UDP peer's flow
        #: lasts while it is heard from, or while its bindings may (they die with it).
        self.udp_listener = (
            DatagramListener(
                self.flows,
                self.core.on_message,
                idle=UDP_IDLE,
                held=MAX_EXPIRES + UDP_IDLE,
                caps=ConnectionCaps(limits.max_connections, limits.max_connections_per_source),
            )
            if settings.sip_udp_port
            else None
        )
        self.sip_port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def add_to_server(self, server: grpc.aio.Server) -> None:
        signaling_pb2_grpc.add_SignalingServicer_to_server(
            SignalingServicer(self.flows, self.proxy, self.locations, self.mover), server
        )

    async def start(self) -> None:
        self.sip_port = await self._listen(self.listener, "sip_port")
        log.info("SIP over TLS listening", extra={"port": self.sip_port, "replica": self.replica})
        for listener, setting in (
            (self.tcp_listener, "sip_tcp_port"),
            (self.udp_listener, "sip_udp_port"),
        ):
            if listener is not None:
                port = await self._listen(listener, setting)
                log.warning(
                    "SIP without TLS listening: signaling and a=zrtp-hash in the clear",
                    extra={"port": port, "transport": setting.split("_")[1].upper()},
                )
        for work in (self._heartbeat(), self._timers(), self._watch_certificate()):
            self._tasks.append(asyncio.create_task(work))

    @property
    def _listeners(self) -> list[StreamListener]:
        return [self.listener, *([self.tcp_listener] if self.tcp_listener else [])]

    async def _listen(self, listener: StreamListener | DatagramListener, setting: str) -> int:
        port = int(getattr(self.settings, setting))
        try:
            return await listener.start(self.settings.sip_bind, port)
        except OSError as exc:
            raise SettingsError(
                f"cannot listen on {env_name('sip_bind')}:{env_name(setting)} ="
                f" {self.settings.sip_bind}:{port}: {exc.strerror}"
            ) from exc

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        async def listening() -> bool:
            return self.listener.serving

        return {**super().readiness_checks(), "sip-listener": listening}

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.replicas.heartbeat(self.replica, self.settings.grpc_peer_address)
            except Exception as exc:  # Redis away: counted, logged once a minute, tried again
                self.loop_errors.record("replica heartbeat", exc)
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _timers(self) -> None:
        while True:
            await self.proxy.timers_due()
            try:
                await self.proxy.run_timers()
            except Exception as exc:  # counted; logged once a minute, not every time
                self.proxy.errors.record("timers", exc)

    async def _watch_certificate(self) -> None:
        paths = (Path(self.settings.sip_tls_cert), Path(self.settings.sip_tls_key))
        seen = _mtimes(*paths)
        while True:
            await asyncio.sleep(self.settings.sip_tls_reload_every)
            current = _mtimes(*paths)
            if current == seen:
                continue
            try:
                load_certificate(self.tls, self.settings)
            except SettingsError as exc:
                log.error("new SIP certificate not loaded", extra={"reason": str(exc)})
                continue
            seen = current
            log.info("SIP certificate reloaded")

    async def drain(self, timeout: float) -> None:
        """Stop taking connections; flows in progress keep going until ``timeout``.
        (UDP has no connections to refuse: its socket stays for the transactions.)"""
        for listener in self._listeners:
            listener.stop_accepting()
        deadline = time.monotonic() + timeout
        # Polling: contexts end inside the proxy's timer loop, which has no event to offer.
        while self.proxy.servers and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            await listener.close()
        if self.udp_listener is not None:
            await self.udp_listener.close()
        await self.peers.close()
        if isinstance(self.media, KeyAgreementPlanner):
            await self.media.close()
        with contextlib.suppress(Exception):
            await self.replicas.leave(self.replica)
        await super().close()
