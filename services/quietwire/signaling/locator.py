"""Where a user or a flow can be reached now: users, locations and replicas in Redis,
this replica's open flows."""

from __future__ import annotations

from quietwire.protocols.sip.uri import SipUri
from quietwire.rpc.signaling.v1.signaling_pb2 import Registration
from quietwire.runtime.registry import ReplicaRegistry
from quietwire.signaling.flows import FlowTable
from quietwire.signaling.locations import LocationStore, Precondition, Unproven
from quietwire.signaling.targets import Target
from quietwire.signaling.users import UserStore


class Locator:
    def __init__(
        self,
        replica: str,
        users: UserStore,
        locations: LocationStore,
        replicas: ReplicaRegistry,
        flows: FlowTable,
    ) -> None:
        self.replica = replica
        self.users, self.locations, self.replicas, self.flows = users, locations, replicas, flows

    async def bindings(
        self, uri: SipUri, proof: Precondition | None = None
    ) -> list[Registration] | None:
        """Live bindings for a request URI (AOR or GRUU); None when the user does not exist.

        One round trip: the user's existence checked in the lookup, and the
        caller's ``proof`` with it if given (:meth:`.auth.Authenticator.proof`:
        an INVITE's credentials). With a proof, :class:`Unproven` when it or the
        user's existence does not hold, nothing changed: the caller takes the
        full way (the full check, then this without a proof), which tells the
        two apart."""
        try:
            if uri.user is None:
                raise Unproven(uri.aor)
            check = self.users.existing(uri.user_unescaped or "")
            found = await self.locations.bindings(
                uri.aor, check if proof is None else check.then(proof)
            )
        except Unproven:
            if proof is not None:
                raise
            return None
        gruu = uri.params.get("gr")
        if gruu:
            found = [b for b in found if b.instance_id.strip("<>") == gruu]
        return [b for b in found if await self.reachable(Target(b.replica, b.flow_id))]

    async def reachable(self, target: Target) -> bool:
        """Our own flow still open, or another replica still alive."""
        if target.replica == self.replica:
            return self.flows.get(target.flow_id) is not None
        return bool(await self.replicas.address(target.replica))
