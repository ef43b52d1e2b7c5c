"""The platform as Kubernetes runs it: Redis and each service a process of its
own, with real TLS (SIP) and mutual TLS (gRPC), each killable and restartable
on the address its peers know it by.

``kill("relay")`` is a SIGKILL (a node lost, an OOM kill); ``restart("relay")``
starts it again on the same gRPC port, the way a pod comes back behind its
Service. Each process's JSON log lines go to ``logs/NAME.log`` (a restart
appends), which :meth:`Cluster.log_lines` reads back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quietwire.embedded.pki import Pki, ensure_pki
from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.protocols.sip.message import Request
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import SERVING, serving_status
from quietwire.runtime.tls import TlsFiles

from tests.conftest import (
    RedisServer,
    ServiceProcess,
    free_port,
    quietwire_env,
    run_quietwire,
    start_redis,
    start_service,
    stop_process,
    stop_redis,
)
from tests.integration.signaling_harness import establish
from tests.interop.test_relay_calls import sdp
from tests.support.wait import eventually

DOMAIN = "127.0.0.1"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret-1", "carol": "carol-secret"}
#: Seconds a stopped service gets to drain before it is killed.
STOP_TIMEOUT = 20


@dataclass
class Cluster:
    """Redis, keyagreement, ``relays`` relays and one signaling replica, separately run.

    Relays are named ``relay``, ``relay-2``, ``relay-3``...
    """

    root: Path
    pki: Pki
    redis: RedisServer
    sip_port: int
    relays: int = 1
    #: Running processes by name; a killed one is absent until restarted.
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    #: The gRPC port each service had first, kept for its restarts.
    grpc_ports: dict[str, int] = field(default_factory=dict)

    @property
    def relay_names(self) -> list[str]:
        return ["relay", *(f"relay-{n}" for n in range(2, self.relays + 1))]

    @property
    def names(self) -> list[str]:
        """Every service, in the order they start (signaling needs keyagreement's address)."""
        return ["keyagreement", *self.relay_names, "signaling"]

    @property
    def grpc_tls(self) -> TlsFiles:
        return TlsFiles(self.pki.grpc_cert, self.pki.grpc_key, self.pki.ca)

    def env(self, **settings: str) -> dict[str, str]:
        """The QW_* environment every process of this cluster shares, plus ``settings``."""
        shared = {
            "QW_REDIS_URL": self.redis.url,
            "QW_LOG_LEVEL": "info",
            "QW_SIP_DOMAIN": DOMAIN,
            "QW_SIP_BIND": DOMAIN,
            "QW_SIP_PORT": str(self.sip_port),
            "QW_SIP_TLS_CERT": str(self.pki.sip_cert),
            "QW_SIP_TLS_KEY": str(self.pki.sip_key),
            "QW_SIP_SECRET": "cluster-test-secret-of-enough-length",
            "QW_GRPC_BIND": "127.0.0.1",
            "QW_GRPC_TLS_CERT": str(self.pki.grpc_cert),
            "QW_GRPC_TLS_KEY": str(self.pki.grpc_key),
            "QW_GRPC_TLS_CA": str(self.pki.ca),
            "QW_RELAY_ADVERTISE": "127.0.0.1",
            "QW_RELAY_PEER_ALLOW": "127.0.0.0/8,::1",
            "QW_DRAIN_TIMEOUT": "2",
            "QW_SHUTDOWN_GRACE": "1",
        }
        if "keyagreement" in self.grpc_ports:
            shared["QW_KEYAGREEMENT_TARGET"] = self.address("keyagreement")
        return quietwire_env(**shared, **settings)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[name]}"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log line ``name`` wrote so far (all its runs)."""
        text = self.log(name).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def pid(self, name: str) -> int:
        return self.processes[name].process.pid

    async def start(self, name: str, pass_fds: Sequence[int] = (), **settings: str) -> None:
        """Start ``name`` (on its old gRPC port if it ran before) and wait until it
        serves; ``pass_fds``: descriptors it inherits (:func:`start_service`)."""
        command = name.split("-")[0]  # relay-2 is a relay, keyagreement-2 a keyagreement
        env = self.env(**settings)
        if name in self.grpc_ports:
            env["QW_GRPC_PORT"] = str(self.grpc_ports[name])
        self.log(name).parent.mkdir(exist_ok=True)
        with self.log(name).open("a", encoding="utf-8") as log:
            started = start_service(command, env, pass_fds=pass_fds, stderr=log)
        self.processes[name] = started
        self.grpc_ports.setdefault(name, started.grpc_port)
        await self.wait_serving(name)

    async def wait_serving(self, name: str, timeout: float = 30) -> None:
        async with open_channel(self.address(name), self.grpc_tls) as channel:

            async def serving() -> bool:
                if self.processes[name].process.poll() is not None:
                    raise AssertionError(f"{name} exited: see {self.log(name)}")
                return await serving_status(channel) == SERVING

            await eventually(serving, timeout, f"{name} SERVING", interval=0.1)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and reap it."""
        process = self.processes.pop(name).process
        process.kill()
        process.wait(STOP_TIMEOUT)

    def stop(self, name: str) -> int:
        """SIGTERM ``name`` (it drains, as on a pod's deletion); its exit status."""
        return stop_process(self.processes.pop(name).process, STOP_TIMEOUT)

    async def restart(self, name: str, **settings: str) -> None:
        """Kill ``name`` if it runs, then start it again where its peers expect it."""
        if name in self.processes:
            self.kill(name)
        await self.start(name, **settings)

    async def calls(self) -> str:
        """What ``quietwire calls`` prints now (run off the event loop: phones keep answering)."""
        done = await asyncio.to_thread(self.quietwire, "calls")
        assert done.returncode == 0, done.stderr
        return done.stdout

    async def relay_sessions(self, name: str = "relay") -> list[str]:
        """The sessions relay ``name`` holds now (each holds its port pairs)."""
        async with open_channel(self.address(name), self.grpc_tls) as channel:
            listed = await relay_pb2_grpc.RelayStub(channel).ListSessions(
                relay_pb2.ListSessionsRequest(), timeout=5
            )
        return [session.call_id for session in listed.sessions]

    def quietwire(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``quietwire ARGS...`` with this cluster's settings (``calls``, ``user``...)."""
        return run_quietwire(*args, env=self.env(), stdin=stdin)

    def add_users(self) -> None:
        for user, password in PASSWORDS.items():
            done = self.quietwire("user", "add", user, "--password-stdin", stdin=password)
            assert done.returncode == 0, done.stderr

    async def agent(self, user: str, password: str | None = None) -> UserAgent:
        """A SIP user agent for ``user`` over TLS to the signaling replica."""
        connection = await SipConnection.open(DOMAIN, self.sip_port, self.pki.ca)
        secret = password if password is not None else PASSWORDS[user]
        return UserAgent(connection, user, secret, DOMAIN, self.sip_port)

    def close(self) -> None:
        """Stop every service still running (signaling first), then Redis."""
        for name in reversed(self.names):
            if name in self.processes:
                self.stop(name)
        for name in list(self.processes):  # more replicas a test started
            self.stop(name)
        stop_redis(self.redis)


@contextmanager
def cluster_files(root: Path, relays: int = 1) -> Iterator[Cluster]:
    """A :class:`Cluster` with its PKI and Redis ready and no service started yet."""
    pki = ensure_pki(root / "pki", DOMAIN)
    redis = start_redis(root, "--appendonly", "yes", "--appendfsync", "everysec")
    cluster = Cluster(root, pki, redis, free_port(), relays)
    try:
        yield cluster
    finally:
        cluster.close()


async def start_all(cluster: Cluster, **settings: str) -> Cluster:
    """Every service of ``cluster`` started in order, and the demo users added."""
    for name in cluster.names:
        await cluster.start(name, **settings)
    cluster.add_users()
    return cluster


def zrtp_invite(caller: UserAgent, callee: str, port: int = 40000) -> Request:
    """An INVITE from ``caller`` to user ``callee`` offering ZRTP audio at ``port``."""
    offer = sdp(caller.user, port, True)
    return caller.build(
        "INVITE", f"sip:{callee}@{DOMAIN}", body=offer, content_type="application/sdp"
    )


async def established(
    caller: UserAgent, callee: UserAgent, port: int = 40000
) -> tuple[Request, Dialog]:
    """An answered, ACKed ZRTP call through the relay (``callee`` registered first):
    its INVITE and the caller's dialog."""
    assert (await callee.register()).status == 200
    invite = zrtp_invite(caller, callee.user, port)
    dialog, _ = await establish(caller, callee, invite, sdp(callee.user, port + 2, True))
    return invite, dialog
