"""A service as a real process: fail-fast settings, health, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from quietwire.embedded.pki import ensure_pki
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.channels import open_channel
from quietwire.runtime.health import LIVENESS, NOT_SERVING, SERVING, serving_status
from quietwire.runtime.redisclient import redis_client
from quietwire.runtime.registry import RelayRegistry
from quietwire.runtime.settings import CommonSettings, load_settings
from quietwire.runtime.tls import TlsFiles

from tests.conftest import (
    free_port,
    port_open,
    quietwire_env,
    run_quietwire,
    start_redis,
    start_service,
    stop_redis,
)
from tests.support.wait import eventually


def test_bad_setting_stops_at_once() -> None:
    result = run_quietwire("signaling", env=quietwire_env(QW_SIP_PORT="abc"))
    assert result.returncode == 2
    assert "invalid setting QW_SIP_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_unloadable_certificate_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "sip.pem", tmp_path / "sip.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    key.write_text("nothing\n")
    env = quietwire_env(QW_SIP_TLS_CERT=str(cert), QW_SIP_TLS_KEY=str(key), QW_GRPC_INSECURE="true")
    result = run_quietwire("signaling", env=env)
    assert result.returncode == 2
    assert "QW_SIP_TLS_CERT" in result.stderr
    assert "Traceback" not in result.stderr


def test_kernel_forwarding_needs_one_ipv4_bind_address() -> None:
    env = quietwire_env(QW_GRPC_INSECURE="true", QW_RELAY_KERNEL_FORWARDING="true")
    result = run_quietwire("relay", env=env)
    assert result.returncode == 2
    assert "QW_RELAY_KERNEL_FORWARDING" in result.stderr and "QW_RELAY_BIND" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_port_in_use_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        env = quietwire_env(QW_GRPC_INSECURE="true", QW_GRPC_PORT="0", QW_METRICS_PORT=port)
        result = run_quietwire("relay", env=env)
    assert result.returncode == 2
    assert f"QW_METRICS_BIND:QW_METRICS_PORT = 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def wait_status(target: str, want: int, service: str = "", timeout: float = 15) -> None:
    async with open_channel(target, None) as channel:

        async def reached() -> bool:
            return await serving_status(channel, service) == want

        await eventually(reached, timeout, f"{service!r} reaching {want}", interval=0.1)


async def advertised(redis_port: int) -> list[str]:
    """The gRPC addresses in the relay registry, once there is one."""
    client = redis_client(
        load_settings(CommonSettings, redis_url=f"redis://127.0.0.1:{redis_port}/0")
    )
    try:
        entries = await eventually(RelayRegistry(client).alive, 10, "a relay registered")
    finally:
        await client.aclose()
    return [entry.grpc for entry in entries]


async def test_relay_lifecycle(tmp_path: Path) -> None:
    """On a gRPC port the kernel picked and reported (QW_GRPC_PORT=0, QW_READY_FD),
    its metrics on a socket handed over (QW_METRICS_FD, as ``quietwire up`` does)."""
    redis = start_redis(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as metrics:
        metrics_port, fd = metrics.getsockname()[1], metrics.fileno()
        env = quietwire_env(
            QW_REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
            QW_GRPC_INSECURE="true",
            QW_METRICS_FD=str(fd),
        )
        relay = start_service("relay", env, pass_fds=(fd,), stderr=subprocess.PIPE)
    process, grpc_port = relay.process, relay.grpc_port
    assert relay.ports == {
        "grpc_port": grpc_port,
        "health_port": None,
        "metrics_port": metrics_port,
    }
    target = f"127.0.0.1:{grpc_port}"
    try:
        await wait_status(target, SERVING)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'quietwire_build_info{service="relay"' in metrics
        assert "quietwire_ready 1.0" in metrics
        # What it advertises to keyagreement is where it listens, not port 0.
        assert await advertised(redis.port) == [target]

        stop_redis(redis)
        await wait_status(target, NOT_SERVING)
        await wait_status(target, SERVING, service=LIVENESS, timeout=2)

        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        stop_redis(redis)
        _, stderr = process.communicate(timeout=5)
    assert not port_open(grpc_port)
    assert not port_open(metrics_port)
    entries = [json.loads(line) for line in stderr.splitlines()]
    messages = [e["msg"] for e in entries]
    assert messages[0] == "starting"
    assert "not ready" in messages
    assert messages[-1] == "stopped"
    assert entries[-1]["graceful"] is True
    assert "127.0.0.1" not in stderr


async def test_probe_port_and_tls_server_name(tmp_path: Path, redis_url: str) -> None:
    """Kubelet's plain gRPC probe sees health only; peers dialled by IP verify one name."""
    pki = ensure_pki(tmp_path / "pki", "127.0.0.1")
    grpc_port, health_port = free_port(), free_port()
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_BIND="127.0.0.2",
        QW_GRPC_PORT=str(grpc_port),
        QW_GRPC_TLS_CERT=str(pki.grpc_cert),
        QW_GRPC_TLS_KEY=str(pki.grpc_key),
        QW_GRPC_TLS_CA=str(pki.ca),
        QW_HEALTH_BIND="127.0.0.1",
        QW_HEALTH_PORT=str(health_port),
    )
    process = subprocess.Popen([sys.executable, "-m", "quietwire", "relay"], env=env)
    try:
        await wait_status(f"127.0.0.1:{health_port}", SERVING)
        async with open_channel(f"127.0.0.1:{health_port}", None) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await relay_pb2_grpc.RelayStub(plain).Drain(relay_pb2.DrainRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

        target = f"127.0.0.2:{grpc_port}"
        by_address = TlsFiles(pki.grpc_cert, pki.grpc_key, pki.ca)
        async with open_channel(target, by_address) as channel:
            assert await serving_status(channel) != SERVING  # 127.0.0.2 is not in the cert
        by_name = TlsFiles(pki.grpc_cert, pki.grpc_key, pki.ca, server_name="localhost")
        async with open_channel(target, by_name) as channel:
            assert await serving_status(channel) == SERVING

        healthy = await asyncio.to_thread(run_quietwire, "health", env=env)
        assert (healthy.returncode, healthy.stdout) == (0, "serving\n")
        over_tls = {**env, "QW_HEALTH_PORT": "0", "QW_GRPC_TLS_SERVER_NAME": "localhost"}
        alive = await asyncio.to_thread(
            run_quietwire, "health", "--service", "liveness", env=over_tls
        )
        assert (alive.returncode, alive.stdout) == (0, "serving\n")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


async def test_drain_relay_waits_for_calls(tmp_path: Path, redis_url: str) -> None:
    """The preStop hook: the relay stops taking calls; the hook returns when the last ends."""
    grpc_port = free_port()
    low = free_port() & ~1
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_GRPC_PORT=str(grpc_port),
        QW_RELAY_PORT_MIN=str(low),
        QW_RELAY_PORT_MAX=str(low + 7),
    )
    process = subprocess.Popen([sys.executable, "-m", "quietwire", "relay"], env=env)
    target = f"127.0.0.1:{grpc_port}"
    try:
        await wait_status(target, SERVING)
        async with open_channel(target, None) as channel:
            relay = relay_pb2_grpc.RelayStub(channel)
            legs = [relay_pb2.LegSpec(side=side, rtcp_mux=True) for side in (1, 2)]
            await relay.Allocate(relay_pb2.AllocateRequest(call_id="c1", legs=legs), timeout=5)

            busy = await asyncio.to_thread(
                run_quietwire, "drain-relay", "--timeout", "0.5", env=env
            )
            assert busy.returncode == 1
            assert "draining: 1 calls left" in busy.stdout
            await wait_status(target, NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await relay.Allocate(relay_pb2.AllocateRequest(call_id="c2", legs=legs), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            await relay.Release(relay_pb2.ReleaseRequest(call_id="c1"), timeout=5)
            idle = await asyncio.to_thread(run_quietwire, "drain-relay", env=env)
            assert idle.returncode == 0
            assert "draining: 0 calls left" in idle.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
