"""The relay's Kubernetes API use against kmock, an in-process fake API server.

No Kubernetes API server can run on these machines, so this fake stands in
for it (the code under test is the relay's, talking real HTTP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes.aio import client
from quietwire.relay.kube import DELETION_COST
from quietwire.relay.legs import LegSpec, Side
from quietwire.relay.service import RelayService
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.registry import RelayRegistry
from quietwire.runtime.settings import SettingsError, load_settings

from tests.conftest import free_port
from tests.support.wait import eventually

NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "node-a"},
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "10.0.0.5"},
            {"type": "ExternalIP", "address": "203.0.113.7"},
        ]
    },
}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "relay-0", "namespace": "voip"},
    "spec": {"containers": [{"name": "relay", "image": "quietwire"}]},
}


@pytest.fixture
async def api(kmock: kmock.RawHandler) -> client.Configuration:
    """The fake API server holding one node and the relay's pod."""
    config = client.Configuration(host=str(kmock.url).rstrip("/"))
    async with client.ApiClient(config) as session:
        core = client.CoreV1Api(session)
        await core.create_node(NODE)
        await core.create_namespaced_pod("voip", POD)
    return config


def relay_settings(redis_url: str, **overrides: Any) -> RelaySettings:
    low = free_port() & ~1
    return load_settings(
        RelaySettings,
        redis_url=redis_url,
        grpc_insecure=True,
        grpc_port=free_port(),
        metrics_port=0,
        relay_port_min=low,
        relay_port_max=low + 7,
        kube_node_name="node-a",
        kube_pod_name="relay-0",
        kube_namespace="voip",
        **overrides,
    )


async def wait_deletion_cost(config: client.Configuration, want: str) -> None:
    """Until the pod's annotation reads ``want`` (the relay publishes on its heartbeat)."""
    async with client.ApiClient(config) as session:

        async def published() -> bool:
            pod = await client.CoreV1Api(session).read_namespaced_pod("relay-0", "voip")
            return bool((pod.metadata.annotations or {}).get(DELETION_COST) == want)

        await eventually(published, 10, f"{DELETION_COST} becoming {want}", interval=0.1)


async def test_advertises_the_node_address_and_publishes_its_load(
    api: client.Configuration, kmock: kmock.RawHandler, redis_url: str
) -> None:
    settings = relay_settings(
        redis_url, relay_advertise_from_node="ExternalIP", relay_pod_deletion_cost=True
    )
    service = RelayService(settings, kube_config=api)
    await service.start()
    try:
        await wait_deletion_cost(api, "0")
        entries = await RelayRegistry(service.redis).alive()
        assert [e.advertise for e in entries] == ["203.0.113.7"]

        await service.engine.allocate(
            "call-1", [LegSpec(Side.CALLER, True), LegSpec(Side.CALLEE, True)]
        )
        await wait_deletion_cost(api, "1")
        patches = [r for r in kmock if r.method == "PATCH"]
        assert len(patches) == 2  # published on change only, not every heartbeat
    finally:
        await service.close()


async def test_a_node_without_that_address_stops_the_relay(
    api: client.Configuration, redis_url: str
) -> None:
    async with client.ApiClient(api) as session:
        await client.CoreV1Api(session).patch_node(
            "node-a", {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}}
        )
    service = RelayService(
        relay_settings(redis_url, relay_advertise_from_node="ExternalIP"), kube_config=api
    )
    try:
        with pytest.raises(SettingsError, match=r"QW_RELAY_ADVERTISE_FROM_NODE.*no ExternalIP"):
            await service.start()
    finally:
        await service.close()


async def test_unreachable_api_is_named(redis_url: str) -> None:
    dead = client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    service = RelayService(
        relay_settings(redis_url, relay_advertise_from_node="InternalIP"), kube_config=dead
    )
    try:
        with pytest.raises(SettingsError, match="cannot read node node-a"):
            await service.start()
    finally:
        await service.close()


def test_kube_names_are_required(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="QW_KUBE_NODE_NAME is required"):
        load_settings(RelaySettings, grpc_insecure=True, relay_advertise_from_node="ExternalIP")
    with pytest.raises(SettingsError, match="QW_KUBE_POD_NAME is required"):
        load_settings(RelaySettings, grpc_insecure=True, relay_pod_deletion_cost=True)
