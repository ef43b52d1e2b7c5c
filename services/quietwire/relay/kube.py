"""The relay's two optional uses of the Kubernetes API (kept thin on purpose).

- Its node's address, read from the Node object, as the address phones send
  media to (host-network relays: the node's ExternalIP is the relay's).
- Its own pod's ``controller.kubernetes.io/pod-deletion-cost`` annotation,
  kept equal to its active calls so that a scale-down removes idle relays
  first.

RBAC: ``get`` on nodes for the first, ``patch`` on pods in its namespace for
the second; the chart grants each only when its value turns it on.
"""

from __future__ import annotations

from typing import Literal

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.config import load_incluster_config

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
REQUEST_TIMEOUT = 5.0

AddressType = Literal["ExternalIP", "InternalIP"]


class KubeError(Exception):
    """The API did not give what the relay needs; the message says what."""


def _why(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


#: What a call to the API raises when it fails: an answer or no answer.
API_ERRORS = (client.ApiException, aiohttp.ClientError, OSError, TimeoutError)


def in_cluster() -> client.Configuration:
    """The pod's service-account configuration."""
    config = client.Configuration()
    load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return config


async def node_address(api: client.ApiClient, node: str, kind: AddressType) -> str:
    """The ``kind`` address of ``node`` from its Node object's status."""
    try:
        found = await client.CoreV1Api(api).read_node(node, _request_timeout=REQUEST_TIMEOUT)
    except API_ERRORS as exc:
        raise KubeError(f"cannot read node {node}: {_why(exc)}") from exc
    addresses = (found.status and found.status.addresses) or []
    for address in addresses:
        if address.type == kind:
            return str(address.address)
    present = ", ".join(sorted({a.type for a in addresses})) or "none"
    raise KubeError(f"node {node} has no {kind} address (it has: {present})")


class DeletionCost:
    """Publishes the relay's active calls as its pod's deletion cost, on change only."""

    def __init__(self, api: client.ApiClient, namespace: str, pod: str) -> None:
        self.pods = client.CoreV1Api(api)
        self.namespace = namespace
        self.pod = pod
        self.published: int | None = None

    async def publish(self, active_calls: int) -> None:
        if active_calls == self.published:
            return
        patch = {"metadata": {"annotations": {DELETION_COST: str(active_calls)}}}
        try:
            await self.pods.patch_namespaced_pod(
                self.pod, self.namespace, patch, _request_timeout=REQUEST_TIMEOUT
            )
        except API_ERRORS as exc:
            raise KubeError(f"cannot annotate pod {self.pod}: {_why(exc)}") from exc
        self.published = active_calls
