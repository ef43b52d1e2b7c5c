"""Signaling replicas in the test's event loop: real TLS, real Redis, real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as redis
from quietwire.embedded.pki import Pki, ensure_pki
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.protocols.sip.message import Message, Request
from quietwire.runtime.service import build_server
from quietwire.runtime.settings import load_settings
from quietwire.signaling.media import MediaPlanner
from quietwire.signaling.service import SignalingService
from quietwire.signaling.settings import SignalingSettings
from quietwire.signaling.users import UserStore

from tests.conftest import free_port

DOMAIN = "127.0.0.1"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret-1", "carol": "carol-secret"}
#: Small lockout limits that still hold the rule (3 x (60/60 + 1) = 6 < 7): see
#: signaling/lockout.py.
SMALL_LOCKOUT = {
    "sip_max_auth_failures": 3,
    "sip_auth_failure_window": 60,
    "sip_auth_block": 60,
    "sip_user_max_auth_failures": 7,
    "sip_user_auth_failure_window": 60,
    "sip_user_auth_block": 60,
}


@dataclass
class Replica:
    service: SignalingService
    server: grpc.aio.Server
    port: int

    def plan_with(self, planner: MediaPlanner) -> None:
        """Let ``planner`` plan this replica's media from now on: the offers the
        proxy forwards and the answers that come back (``proxy.answers``)."""
        self.service.proxy.media = planner
        self.service.proxy.answers.media = planner


def replica_settings(pki: Pki, redis_url: str, **overrides: Any) -> SignalingSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "grpc_insecure": True,
        "grpc_port": free_port(),
        "metrics_port": 0,
        "sip_bind": "127.0.0.1",
        "sip_port": free_port(),
        "sip_domain": DOMAIN,
        "sip_tls_cert": pki.sip_cert,
        "sip_tls_key": pki.sip_key,
        "sip_secret": "shared-test-secret",
        "sip_media": "passthrough",
    }
    values.update(overrides)
    return load_settings(SignalingSettings, **values)


@asynccontextmanager
async def replica(pki: Pki, redis_url: str, **overrides: Any) -> AsyncIterator[Replica]:
    settings = replica_settings(pki, redis_url, **overrides)
    service = SignalingService(settings)
    server, _ = build_server(settings)
    service.add_to_server(server)
    await service.start()
    await server.start()
    await service.replicas.heartbeat(service.replica, settings.grpc_peer_address)
    try:
        yield Replica(service, server, settings.sip_port)
    finally:
        await server.stop(None)
        await service.close()


async def add_users(redis_url: str) -> None:
    client = redis.from_url(redis_url)
    store = UserStore(client, DOMAIN)
    for name, password in PASSWORDS.items():
        await store.put(name, password)
    await client.aclose()


async def phone(pki: Pki, port: int, user: str, password: str | None = None) -> UserAgent:
    connection = await SipConnection.open("127.0.0.1", port, pki.ca)
    return UserAgent(connection, user, password or PASSWORDS[user], DOMAIN, port)


async def next_request(ua: UserAgent, method: str, timeout: float = 5.0) -> Request:
    while True:
        request = await asyncio.wait_for(ua.requests.get(), timeout)
        if request.method == method:
            return request


async def establish(
    caller: UserAgent,
    callee: UserAgent,
    invite: Request,
    answer: bytes = b"",
    seen: list[Message] | None = None,
) -> tuple[Dialog, Dialog]:
    """``invite`` from ``caller`` answered 200 by ``callee`` (``answer`` its SDP)
    and ACKed: the caller's and the callee's dialogs. ``seen`` gets the INVITE the
    callee received and the 200 the caller received (their SDP as rewritten)."""
    sending = asyncio.create_task(caller.send(invite))
    arriving = asyncio.create_task(next_request(callee, "INVITE"))
    await asyncio.wait({sending, arriving}, return_when=asyncio.FIRST_COMPLETED)
    if not arriving.done():  # answered without ringing the callee: say how
        arriving.cancel()
        final = sending.result().final
        status = f"{final.status} {final.reason}" if final is not None else "nothing"
        raise AssertionError(f"INVITE to {callee.user} answered {status} before reaching it")
    incoming = arriving.result()
    ok = callee.answer(incoming, 200, "OK", body=answer)
    ok.headers.set("Record-Route", ", ".join(incoming.headers.get_all("Record-Route")))
    await callee.connection.send(ok)
    exchange = await sending
    assert exchange.final is not None and exchange.final.status == 200
    if seen is not None:
        seen += [incoming, exchange.final]
    dialog = caller.dialog_from_response(invite, exchange.final)
    await caller.connection.send(caller.in_dialog(dialog, "ACK", cseq=exchange.final.cseq.number))
    await next_request(callee, "ACK")
    return dialog, callee.dialog_from_request(incoming, ok)


def make_pki(tmp_path: Path) -> Pki:
    return ensure_pki(tmp_path / "pki", DOMAIN)
