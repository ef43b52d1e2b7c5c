"""The proxy's live requests: one :class:`Context` per server transaction, with its
client branches (RFC 3261 section 16), kept in a :class:`ServerTable` that a
stranger cannot grow without bound: a cap per source address and in total.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from quietwire.protocols.sip.message import Request, Response
from quietwire.protocols.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerKey,
    ServerNonInviteTransaction,
)
from quietwire.runtime.metrics import unlocked
from quietwire.signaling.dialogs import Dialog, Party
from quietwire.signaling.early import EarlySdp
from quietwire.signaling.flows import Flow
from quietwire.signaling.targets import Target

ClientTx = ClientInviteTransaction | ClientNonInviteTransaction
ServerTx = ServerInviteTransaction | ServerNonInviteTransaction

LIVE = unlocked(Gauge("quietwire_sip_server_transactions", "Live proxy server transactions"))
REFUSED = Counter(
    "quietwire_sip_transactions_refused", "Requests refused: transaction cap reached", ["cap"]
)


@dataclass(eq=False)
class Branch:
    branch: str
    target: Target
    tx: ClientTx
    request: Request
    final: Response | None = None
    cancelled: bool = False
    ringing_since: float | None = None


@dataclass(eq=False)
class Context:
    """One request we forward: its server transaction upstream, its branches downstream."""

    request: Request
    server: ServerTx
    upstream: Flow
    key: ServerKey
    #: Where it came from (the cap per source counts it there).
    source: str
    branches: dict[str, Branch] = field(default_factory=dict)
    answered: bool = False
    finished: bool = False
    initial_invite: bool = False
    #: Set when the media planner saw this INVITE's offer: which side made it.
    offer_from_callee: bool | None = None
    #: Set for an INVITE without SDP (RFC 3261 section 14.1, RFC 3264): its 2xx
    #: carries the offer, made by this side; the ACK carries the answer.
    offer_in_2xx_from_callee: bool | None = None
    #: SDP its provisional responses carried (early media, RFC 3262 offers).
    early: EarlySdp = field(default_factory=EarlySdp)
    #: The dialog party that sent this in-dialog request (None: not the call's
    #: own), and its dialog as the request found it.
    party: Party | None = None
    dialog: Dialog | None = None

    @property
    def pending(self) -> list[Branch]:
        return [b for b in self.branches.values() if b.final is None]


class ServerTable:
    """Live contexts by server transaction key, capped per source and in total."""

    def __init__(self, total: int, per_source: int) -> None:
        self.total, self.per_source = total, per_source
        self._contexts: dict[ServerKey, Context] = {}
        self._by_source: Tally[str] = Tally()

    def admits(self, source: str) -> bool:
        """Whether a new transaction from ``source`` fits under both caps (counted if not)."""
        if len(self._contexts) >= self.total:
            REFUSED.labels("total").inc()
            return False
        if self._by_source[source] >= self.per_source:
            REFUSED.labels("source").inc()
            return False
        return True

    def add(self, context: Context) -> None:
        if context.key in self._contexts:
            self.remove(context.key)
        self._contexts[context.key] = context
        self._by_source[context.source] += 1
        LIVE.inc()

    def remove(self, key: ServerKey) -> Context | None:
        context = self._contexts.pop(key, None)
        if context is not None:
            self._by_source[context.source] -= 1
            if self._by_source[context.source] <= 0:
                del self._by_source[context.source]
            LIVE.dec()
        return context

    def get(self, key: ServerKey) -> Context | None:
        return self._contexts.get(key)

    def from_source(self, source: str) -> int:
        return self._by_source[source]

    def __contains__(self, key: object) -> bool:
        return key in self._contexts

    def __len__(self) -> int:
        return len(self._contexts)

    def __iter__(self) -> Iterator[Context]:
        return iter(list(self._contexts.values()))
