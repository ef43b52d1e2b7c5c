"""``quietwire keyagreement``: the security plan of every call.

Plans offers and answers (policy, a relay, SDP endpoints), keeps call security
records in Redis, follows every relay's events for the ZRTP binding check, and
moves calls between relays (a relay lost or drained, or an operator's ask).
"""

from __future__ import annotations

import asyncio

import grpc

from quietwire.keyagreement.binding import BindingChecker
from quietwire.keyagreement.calls import CallStore
from quietwire.keyagreement.migration import Migrator
from quietwire.keyagreement.moves import CallMover
from quietwire.keyagreement.planner import Planner, RelayClients
from quietwire.keyagreement.policy import Policy
from quietwire.keyagreement.reconciler import Reconciler
from quietwire.keyagreement.servicer import KeyAgreementServicer
from quietwire.keyagreement.settings import KeyAgreementSettings
from quietwire.keyagreement.teardown import CallTerminator
from quietwire.keyagreement.userpolicies import UserPolicies
from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc
from quietwire.runtime.channels import ChannelPool
from quietwire.runtime.outbox import EndOutbox
from quietwire.runtime.registry import RelayRegistry, ReplicaRegistry
from quietwire.runtime.service import RedisBackedService


class KeyAgreementService(RedisBackedService):
    grpc_services: tuple[str, ...] = ("quietwire.keyagreement.v1.KeyAgreement",)

    def __init__(self, settings: KeyAgreementSettings) -> None:
        super().__init__(settings)
        policy = Policy(settings.media_policy)
        self.store = CallStore(self.redis, policy, self.replication)
        self.registry = RelayRegistry(self.redis)
        self.relays = RelayClients(settings.grpc_tls)
        self.signaling = ChannelPool(settings.grpc_tls)
        replicas = ReplicaRegistry(self.redis)
        self.terminator = CallTerminator(replicas, self.signaling)
        self.binding = BindingChecker(
            self.store, self.registry, self.relays, self.terminator.terminate
        )
        self.planner = Planner(
            self.store,
            self.registry,
            self.relays,
            policy,
            UserPolicies(self.redis),
            on_relay=self.binding.follow,
        )
        self.reconciler = Reconciler(
            self.store,
            self.registry,
            self.relays,
            self.planner,
            self.terminator,
            EndOutbox(self.redis),
            self.binding.relay_gone,
            settings.reconcile_every,
        )
        self.migrator = Migrator(
            self.store,
            self.registry,
            self.planner,
            CallMover(replicas, self.signaling),
            self.binding.end_call,
        )
        self.binding.lost_calls = self.reconciler.lost_calls = self.migrator.rescue
        self._task: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        keyagreement_pb2_grpc.add_KeyAgreementServicer_to_server(
            KeyAgreementServicer(self.planner, self.store, self.migrator), server
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self.binding.run())
        self._reconciling = asyncio.create_task(self.reconciler.run())

    async def close(self) -> None:
        if self._reconciling is not None:
            self._reconciling.cancel()
            await asyncio.gather(self._reconciling, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.binding.close()
        await self.relays.close()
        await self.signaling.close()
        await super().close()
