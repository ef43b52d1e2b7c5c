"""SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted state), sans-I/O.

Four machines, one shape: an ``Enum`` state, a transition table, named timers
(``TIMER_A`` ... ``TIMER_M``) with deadlines on an injected clock, and two
outboxes: ``to_send`` (messages for the transport) and ``to_tu`` (responses,
requests and :class:`Timeout` for the transaction user). On reliable
transports the retransmission timers never run and the wait timers are zero.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from quietwire.protocols.clock import Clock
from quietwire.protocols.sip.message import Message, Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0
BRANCH_COOKIE = "z9hG4bK"


class State(enum.Enum):
    # Members hash by identity, in C (they compare by identity): Enum's own
    # __hash__ runs in Python, and the transition table and every timer
    # started or stopped look a member up.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(enum.Enum):
    __hash__ = object.__hash__  # as State's

    TIMER_A = "A"  # ICT request retransmission
    TIMER_B = "B"  # ICT timeout
    TIMER_D = "D"  # ICT wait for response retransmissions
    TIMER_E = "E"  # NICT request retransmission
    TIMER_F = "F"  # NICT timeout
    TIMER_G = "G"  # IST response retransmission
    TIMER_H = "H"  # IST wait for ACK
    TIMER_I = "I"  # IST wait for ACK retransmissions
    TIMER_J = "J"  # NIST wait for request retransmissions
    TIMER_K = "K"  # NICT wait for response retransmissions
    TIMER_L = "L"  # IST Accepted (RFC 6026)
    TIMER_M = "M"  # ICT Accepted (RFC 6026)


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timer B, F or H fired: no answer (the TU answers 408 or gives up)."""

    timer: Timer


@dataclass(frozen=True, slots=True, init=False)
class ServerKey:
    """What matches a request to a server transaction (RFC 3261 section 17.2.3)."""

    branch: str
    sent_by: str
    method: str

    def __init__(self, branch: str, sent_by: str, method: str) -> None:
        # Written out: compiled with the module, where the generated one would
        # run interpreted (a key is made for every request).
        object.__setattr__(self, "branch", branch)
        object.__setattr__(self, "sent_by", sent_by)
        object.__setattr__(self, "method", method)

    def __hash__(self) -> int:  # written out too: dict keys of every message's lookups
        return hash((self.branch, self.sent_by, self.method))

    @classmethod
    def of(cls, request: Request) -> ServerKey:
        via = request.vias[0]
        method = "INVITE" if request.method == "ACK" else request.method
        sent_by = f"{via.host.lower()}:{via.port or ''}"
        return ServerKey(via.branch or "", sent_by, method)


@dataclass(frozen=True, slots=True, init=False)
class ClientKey:
    """What matches a response to a client transaction (RFC 3261 section 17.1.3)."""

    branch: str
    method: str

    def __init__(self, branch: str, method: str) -> None:
        object.__setattr__(self, "branch", branch)
        object.__setattr__(self, "method", method)

    def __hash__(self) -> int:
        return hash((self.branch, self.method))

    @classmethod
    def of(cls, message: Message) -> ClientKey:
        return ClientKey(message.vias[0].branch or "", message.cseq.method)


def ack_for(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (RFC 3261 section 17.1.1.3): same branch."""
    ack = Request(method="ACK", uri=invite.uri)
    ack.headers.add("Via", invite.headers.get_all("Via")[0])
    for value in invite.headers.get_all("Route"):
        ack.headers.add("Route", value)
    ack.headers.add("From", invite.headers.get("From") or "")
    ack.headers.add("To", response.headers.get("To") or "")
    ack.headers.add("Call-ID", invite.call_id)
    ack.headers.add("CSeq", f"{invite.cseq.number} ACK")
    ack.headers.add("Max-Forwards", "70")
    return ack


class Transaction:
    """The shared machinery: state, transition table, timers, outboxes."""

    TRANSITIONS: ClassVar[dict[State, frozenset[State]]]

    def __init__(self, request: Request, reliable: bool, clock: Clock, initial: State) -> None:
        self.request = request
        self.reliable = reliable
        self.clock = clock
        self.state = initial
        self.timers: dict[Timer, float] = {}
        self.intervals: dict[Timer, float] = {}
        self.to_send: list[Message] = []
        self.to_tu: list[Message | Timeout] = []
        self.last_response: Response | None = None
        #: Told each deadline a timer is started with (the TU's timer heap), so
        #: nobody needs to poll a transaction whose timers are not due.
        self.on_timer: Callable[[float], None] | None = None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def next_timer(self) -> float | None:
        return min(self.timers.values(), default=None)

    def _set_state(self, new: State) -> None:
        if new is not self.state and new not in self.TRANSITIONS[self.state]:
            raise RuntimeError(f"{type(self).__name__}: {self.state.value} -> {new.value}")
        self.state = new
        if new is State.TERMINATED:
            self.timers.clear()

    def _start(self, timer: Timer, interval: float) -> None:
        self.intervals[timer] = interval
        deadline = self.timers[timer] = self.clock.now() + interval
        if self.on_timer is not None:
            self.on_timer(deadline)

    def _stop(self, *timers: Timer) -> None:
        for timer in timers:
            self.timers.pop(timer, None)

    def _wait(self, timer: Timer, unreliable: float) -> None:
        """A wait timer: ``unreliable`` seconds, or terminate at once on reliable transports."""
        if self.reliable:
            self._set_state(State.TERMINATED)
        else:
            self._start(timer, unreliable)

    def poll(self) -> None:
        now = self.clock.now()
        if all(deadline > now for deadline in self.timers.values()):
            return  # none due (a timer stopped since its deadline was announced)
        for timer, deadline in sorted(self.timers.items(), key=lambda item: item[1]):
            if deadline <= now and timer in self.timers:
                del self.timers[timer]
                self._fire(timer)

    def _fire(self, timer: Timer) -> None:
        raise NotImplementedError


class ClientInviteTransaction(Transaction):
    TRANSITIONS: ClassVar[dict[State, frozenset[State]]] = {
        State.CALLING: frozenset(
            {State.PROCEEDING, State.COMPLETED, State.ACCEPTED, State.TERMINATED}
        ),
        State.PROCEEDING: frozenset({State.COMPLETED, State.ACCEPTED, State.TERMINATED}),
        State.COMPLETED: frozenset({State.TERMINATED}),
        State.ACCEPTED: frozenset({State.TERMINATED}),
        State.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, reliable: bool, clock: Clock) -> None:
        super().__init__(request, reliable, clock, State.CALLING)
        self.to_send.append(request)
        if not reliable:
            self._start(Timer.TIMER_A, T1)
        self._start(Timer.TIMER_B, 64 * T1)

    def receive(self, response: Response) -> None:
        if self.state in (State.CALLING, State.PROCEEDING):
            self._stop(Timer.TIMER_A)
            if response.status < 200:
                self._stop(Timer.TIMER_B)
                self._set_state(State.PROCEEDING)
                self.to_tu.append(response)
            elif response.status < 300:
                self._stop(Timer.TIMER_B)
                self._set_state(State.ACCEPTED)
                self._start(Timer.TIMER_M, 64 * T1)
                self.to_tu.append(response)
            else:
                self._stop(Timer.TIMER_B)
                self._set_state(State.COMPLETED)
                self.to_send.append(ack_for(self.request, response))
                self.to_tu.append(response)
                self._wait(Timer.TIMER_D, 32.0)
        elif self.state is State.COMPLETED and response.status >= 300:
            self.to_send.append(ack_for(self.request, response))
        elif self.state is State.ACCEPTED and 200 <= response.status < 300:
            self.to_tu.append(response)  # 2xx retransmissions go to the TU, which ACKs them

    def _fire(self, timer: Timer) -> None:
        if timer is Timer.TIMER_A and self.state is State.CALLING:
            self.to_send.append(self.request)
            self._start(Timer.TIMER_A, self.intervals[Timer.TIMER_A] * 2)
        elif timer is Timer.TIMER_B and self.state is State.CALLING:
            # Once ringing, only the TU's Timer C (a proxy) or the user ends the wait.
            self.to_tu.append(Timeout(timer))
            self._set_state(State.TERMINATED)
        elif timer in (Timer.TIMER_D, Timer.TIMER_M):
            self._set_state(State.TERMINATED)


#: Figures 7 and 8 of RFC 3261: client and server non-INVITE share their states.
NON_INVITE_TRANSITIONS: dict[State, frozenset[State]] = {
    State.TRYING: frozenset({State.PROCEEDING, State.COMPLETED, State.TERMINATED}),
    State.PROCEEDING: frozenset({State.COMPLETED, State.TERMINATED}),
    State.COMPLETED: frozenset({State.TERMINATED}),
    State.TERMINATED: frozenset(),
}


class ClientNonInviteTransaction(Transaction):
    TRANSITIONS: ClassVar[dict[State, frozenset[State]]] = NON_INVITE_TRANSITIONS

    def __init__(self, request: Request, reliable: bool, clock: Clock) -> None:
        super().__init__(request, reliable, clock, State.TRYING)
        self.to_send.append(request)
        if not reliable:
            self._start(Timer.TIMER_E, T1)
        self._start(Timer.TIMER_F, 64 * T1)

    def receive(self, response: Response) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self.to_tu.append(response)
        if response.status < 200:
            self._set_state(State.PROCEEDING)
            return
        self._stop(Timer.TIMER_E, Timer.TIMER_F)
        self._set_state(State.COMPLETED)
        self._wait(Timer.TIMER_K, T4)

    def _fire(self, timer: Timer) -> None:
        if timer is Timer.TIMER_E and self.state in (State.TRYING, State.PROCEEDING):
            self.to_send.append(self.request)
            interval = (
                T2 if self.state is State.PROCEEDING else min(self.intervals[Timer.TIMER_E] * 2, T2)
            )
            self._start(Timer.TIMER_E, interval)
        elif timer is Timer.TIMER_F and self.state in (State.TRYING, State.PROCEEDING):
            self.to_tu.append(Timeout(timer))
            self._set_state(State.TERMINATED)
        elif timer is Timer.TIMER_K:
            self._set_state(State.TERMINATED)


class ServerInviteTransaction(Transaction):
    TRANSITIONS: ClassVar[dict[State, frozenset[State]]] = {
        State.PROCEEDING: frozenset({State.COMPLETED, State.ACCEPTED, State.TERMINATED}),
        State.COMPLETED: frozenset({State.CONFIRMED, State.TERMINATED}),
        State.CONFIRMED: frozenset({State.TERMINATED}),
        State.ACCEPTED: frozenset({State.TERMINATED}),
        State.TERMINATED: frozenset(),
    }

    def __init__(self, request: Request, reliable: bool, clock: Clock) -> None:
        super().__init__(request, reliable, clock, State.PROCEEDING)
        self.key = ServerKey.of(request)

    def receive(self, request: Request) -> None:
        """A retransmitted INVITE, or the ACK of a non-2xx final response."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self._stop(Timer.TIMER_G, Timer.TIMER_H)
                self._set_state(State.CONFIRMED)
                self._wait(Timer.TIMER_I, T4)
            return
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            self.to_send.append(self.last_response)

    def respond(self, response: Response) -> None:
        """A response from the TU."""
        if self.state is not State.PROCEEDING:
            return
        self.last_response = response
        self.to_send.append(response)
        if response.status < 200:
            return
        if response.status < 300:
            self._set_state(State.ACCEPTED)
            self._start(Timer.TIMER_L, 64 * T1)
            return
        self._set_state(State.COMPLETED)
        if not self.reliable:
            self._start(Timer.TIMER_G, T1)
        self._start(Timer.TIMER_H, 64 * T1)

    def _fire(self, timer: Timer) -> None:
        if timer is Timer.TIMER_G and self.state is State.COMPLETED and self.last_response:
            self.to_send.append(self.last_response)
            self._start(Timer.TIMER_G, min(self.intervals[Timer.TIMER_G] * 2, T2))
        elif timer is Timer.TIMER_H and self.state is State.COMPLETED:
            self.to_tu.append(Timeout(timer))
            self._set_state(State.TERMINATED)
        elif timer in (Timer.TIMER_I, Timer.TIMER_L):
            self._set_state(State.TERMINATED)


class ServerNonInviteTransaction(Transaction):
    TRANSITIONS: ClassVar[dict[State, frozenset[State]]] = NON_INVITE_TRANSITIONS

    def __init__(self, request: Request, reliable: bool, clock: Clock) -> None:
        super().__init__(request, reliable, clock, State.TRYING)
        self.key = ServerKey.of(request)

    def receive(self, request: Request) -> None:
        """A retransmission: answer with the last response, if any."""
        if self.last_response is not None and self.state is not State.TERMINATED:
            self.to_send.append(self.last_response)

    def respond(self, response: Response) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self.last_response = response
        self.to_send.append(response)
        if response.status < 200:
            self._set_state(State.PROCEEDING)
            return
        self._set_state(State.COMPLETED)
        self._wait(Timer.TIMER_J, 64 * T1)

    def _fire(self, timer: Timer) -> None:
        if timer is Timer.TIMER_J:
            self._set_state(State.TERMINATED)
