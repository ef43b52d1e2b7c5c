"""SIP over TLS (and, when enabled, plain TCP and UDP) — flows, RFC 5626 — of
one signaling replica.

Each accepted connection is a :class:`Flow` with an id unique across
replicas that also says its transport (``<replica>.<n>`` over TLS,
``<replica>.t<n>`` over TCP, ``<replica>.u<n>`` for a UDP peer address), and
a bounded backlog for what a slow reader has not taken yet. A stream is an
:class:`asyncio.Protocol` (:class:`StreamConnection`): bytes are framed as they
arrive, no reader or writer task, no timer moved per read. Messages go to the
handler; a malformed request is answered 400 when it can be, anything unparsable
is counted and, on a stream, ends the
connection (the framing can no longer be trusted) once its answer is written.
The listener never stops for one bad peer, and no peer holds more than
:class:`StreamLimits` allow: connections are capped in total and per source, a
message must arrive whole within a deadline that trickled bytes do not extend,
and a small body is all a message may carry before someone authenticates.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import Counter, Gauge

from quietwire.protocols.clock import MonotonicClock
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.framing import (
    PONG,
    PREAUTH_BODY_BYTES,
    KeepAlive,
    Malformed,
    StreamFramer,
)
from quietwire.protocols.sip.message import (
    Headers,
    Message,
    Request,
    Response,
    parse_message,
    split_head,
)
from quietwire.runtime.aio import Tasks, finally_await
from quietwire.runtime.metrics import Series, unlocked
from quietwire.signaling.admission import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_SOURCE,
    ConnectionCaps,
    source_key,
)
from quietwire.signaling.errorlog import sip_errors

log = logging.getLogger(__name__)
#: Whatever a connection's handling raises: counted, logged once a minute per kind
#: (a stranger who can cause one must not flood the log).
HANDLER_ERRORS = sip_errors(log, MonotonicClock())

#: Messages waiting to be written on one connection before new ones are refused.
SEND_QUEUE_LIMIT = 256
IDLE_TIMEOUT = 300.0
#: Seconds from a message's first byte to its last (QW_SIP_MESSAGE_TIMEOUT).
MESSAGE_TIMEOUT = 10.0
#: Seconds an answer written before a close may take to leave.
FLUSH_TIMEOUT = 2.0
#: Bytes a connection may have unsent for a message to be written past the send queue.
WRITE_AT_ONCE = 65536
#: Answers a UDP peer's flow keeps for its retransmitted requests.
RECENT_ANSWERS = 8

FLOWS = unlocked(Gauge("quietwire_sip_flows", "Open SIP connections"))
RECEIVED = Series(Counter("quietwire_sip_messages_received", "SIP messages received", ["kind"]))
MALFORMED = Counter("quietwire_sip_malformed", "Malformed SIP input", ["action"])
QUEUE_FULL = Counter("quietwire_sip_send_queue_full", "Messages refused: send queue full")
UDP_DROPPED = Counter(
    "quietwire_sip_udp_dropped", "UDP messages dropped: their peer had INBOX_LIMIT waiting"
)
RESPONSES = Series(
    Counter("quietwire_sip_responses_sent", "SIP responses queued for phones", ["method", "status"])
)
#: Methods RESPONSES names (RFC 3261's); any other counts as "other", so a
#: stranger's made-up methods cannot grow the number of series.
COUNTED_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS"})


def count_response(response: Response) -> None:
    """One more response in RESPONSES (retransmissions over UDP included)."""
    try:
        method = response.cseq.method
    except ParseError:
        method = "other"
    method = method if method in COUNTED_METHODS else "other"
    RESPONSES(method, str(response.status)).inc()


@dataclass(eq=False)
class Flow:
    id: str
    transport: str
    remote: tuple[str, int]
    #: Where bytes for the peer are written (None: kept in ``backlog``, as in unit tests).
    wire: asyncio.WriteTransport | None
    #: Bytes waiting while the connection does not take more (the peer reads slowly).
    backlog: deque[bytes] = field(default_factory=deque)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Run when the connection ends (the registrar drops the flow's bindings: RFC 5626).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Bindings registered over this flow: (aor, contact, instance, reg-id).
    bindings: set[tuple[str, str, str, int]] = field(default_factory=set)
    #: Someone passed digest authentication on this flow: its messages may be larger.
    authenticated: bool = False
    #: The transport's buffer is over its high-water mark: new bytes wait in ``backlog``.
    paused: bool = False
    #: Aborts a closed connection whose last bytes do not leave (FLUSH_TIMEOUT).
    _linger: asyncio.TimerHandle | None = None

    def send(self, data: bytes) -> bool:
        """Written at once while the connection takes data, else queued in order
        (SEND_QUEUE_LIMIT at most); False when the queue is full or the flow is gone."""
        if self.closed.is_set():
            return False
        wire = self.wire
        if wire is not None and not self.paused and not self.backlog and not wire.is_closing():
            wire.write(data)
            return True
        if len(self.backlog) >= SEND_QUEUE_LIMIT:
            QUEUE_FULL.inc()
            return False
        self.backlog.append(data)
        return True

    def send_message(self, message: Message) -> bool:
        sent = self.send(message.serialize())
        if sent and isinstance(message, Response):
            count_response(message)
        return sent

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """The connection takes data again: what waited goes, in order."""
        self.paused = False
        while self.backlog and not self.paused and self.wire is not None:
            self.wire.write(self.backlog.popleft())

    def close(self) -> None:
        """No more sending; what is queued is still written, for FLUSH_TIMEOUT at most."""
        if self.closed.is_set():
            return
        self.closed.set()
        wire = self.wire
        if wire is None or wire.is_closing():
            return
        while self.backlog:
            wire.write(self.backlog.popleft())
        wire.close()
        self._linger = asyncio.get_running_loop().call_later(FLUSH_TIMEOUT, wire.abort)

    def lost(self) -> None:
        """The connection is gone (whoever ended it): nothing more is sent."""
        self.closed.set()
        self.backlog.clear()
        if self._linger is not None:
            self._linger.cancel()

    async def ended(self) -> None:
        """The flow is gone: close it and run its hooks (its bindings go)."""
        self.close()
        for hook in self.on_close:
            try:
                await hook()
            except Exception as exc:
                HANDLER_ERRORS.record("flow close hook", exc)


@dataclass(eq=False)
class DatagramFlow(Flow):
    """A UDP peer (RFC 5626 section 3.3: the flow is the address pair): what is
    sent goes straight out of the listener's socket, one message a datagram."""

    socket: asyncio.DatagramTransport | None = None
    last_seen: float = 0.0
    #: The last few answers to requests handled without a transaction (REGISTER),
    #: by top Via branch and CSeq, so that a retransmission gets the same one.
    recent: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Messages received from the peer and not yet handled (at most INBOX_LIMIT).
    inbox: deque[Message] = field(default_factory=deque)
    #: The task handling them, while there are some.
    worker: asyncio.Task[None] | None = None

    def answered(self, request: Request, response: Response) -> None:
        self.recent[_retransmission_key(request)] = response.serialize()
        while len(self.recent) > RECENT_ANSWERS:
            del self.recent[next(iter(self.recent))]

    def resend(self, request: Request) -> bool:
        """Send again what answered this request before; False if it is new."""
        data = self.recent.get(_retransmission_key(request))
        return data is not None and self.send(data)

    def send(self, data: bytes) -> bool:
        if self.closed.is_set() or self.socket is None or self.socket.is_closing():
            return False
        self.socket.sendto(data, self.remote)
        return True


Handler = Callable[[Flow, Message], Awaitable[None]]


def _retransmission_key(request: Request) -> tuple[str, str]:
    return (request.vias[0].branch or "", str(request.cseq))


_PREFIX = {"TCP": "t", "UDP": "u"}
_TRANSPORT = {prefix: transport for transport, prefix in _PREFIX.items()}


def flow_transport(flow_id: str) -> str:
    """``TLS``, ``TCP`` or ``UDP``: what a flow id says of its flow (on any replica)."""
    return _TRANSPORT.get(flow_id.rsplit(".", 1)[-1][:1], "TLS")


def reliable(flow_id: str) -> bool:
    """Whether the flow's transport delivers (no transaction retransmissions needed)."""
    return flow_transport(flow_id) != "UDP"


class FlowTable:
    """The open flows of this replica, by id."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.flows: dict[str, Flow] = {}
        self._ids = itertools.count(1)

    def new_id(self, transport: str = "TLS") -> str:
        return f"{self.replica}.{_PREFIX.get(transport, '')}{next(self._ids)}"

    def get(self, flow_id: str) -> Flow | None:
        return self.flows.get(flow_id)


def bad_request_response(data: bytes, error: ParseError) -> Response | None:
    """A 4xx for an unparsable request, when enough of it is readable to answer."""
    head, _ = split_head(data)
    lines = re.split(r"\r?\n", head.decode("utf-8", "replace"))
    if not lines or lines[0].startswith("SIP/"):
        return None
    wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or name.strip().lower() not in wanted or "\r" in line:
            continue  # a bare CR is never echoed back (header injection)
        if headers.get(name.strip()) is None or name.strip().lower() in ("via", "v"):
            headers.add(name.strip(), value.strip())
    if headers.get("Via") is None:
        return None
    return Response(headers, b"", error.status, error.reason[:60] or "Bad Request")


def answer_malformed(flow: Flow, data: bytes, error: ParseError) -> None:
    """A 400 for a malformed request when it can be answered; counted either way."""
    answer = bad_request_response(data, error)
    MALFORMED.labels("answered" if answer else "dropped").inc()
    if answer is not None:
        flow.send_message(answer)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What stream peers may hold (QW_SIP_MAX_CONNECTIONS and the settings after it)."""

    max_connections: int = MAX_CONNECTIONS
    max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE
    #: Body bytes of a message on a flow nobody has authenticated on.
    preauth_body_bytes: int = PREAUTH_BODY_BYTES
    #: Seconds from a message's first byte to its last (slowloris).
    message_timeout: float = MESSAGE_TIMEOUT
    #: Seconds a connection may stay silent between messages.
    idle: float = IDLE_TIMEOUT


#: accept() failures that a retry at once would only repeat; accepting pauses.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = 1.0
#: Seconds a TLS handshake may take before the connection is dropped.
HANDSHAKE_TIMEOUT = 10.0


class StreamListener:
    """Accepts SIP connections — over TLS with a ``context``, plain TCP without —
    and feeds their messages to ``handler``. ``caps`` may be shared by listeners."""

    def __init__(
        self,
        table: FlowTable,
        handler: Handler,
        context: ssl.SSLContext | None,
        limits: StreamLimits | None = None,
        caps: ConnectionCaps | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        """``reuse_port``: the port may be shared with other processes (SO_REUSEPORT)."""
        self.table = table
        self.reuse_port = reuse_port
        self.handler = handler
        self.context = context
        self.transport = "TLS" if context is not None else "TCP"
        self.limits = limits or StreamLimits()
        self.caps = caps or ConnectionCaps(
            self.limits.max_connections, self.limits.max_connections_per_source
        )
        self._sockets: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._handshake = {"ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if context else {}
        self._tasks = Tasks()

    async def start(self, host: str, port: int) -> int:
        """Listen on every address ``host`` names; the port bound (``port`` 0: any)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, _, _, _, address in infos:
            listening = socket.create_server(
                (str(address[0]), port), family=family, backlog=1024, reuse_port=self.reuse_port
            )
            listening.setblocking(False)
            port = int(listening.getsockname()[1])  # the others take the same one
            self._sockets.append(listening)
            self._acceptors.append(asyncio.create_task(self._accept(listening)))
        return port

    @property
    def serving(self) -> bool:
        return any(listening.fileno() >= 0 for listening in self._sockets)

    def stop_accepting(self) -> None:
        """No new connections (draining); flows in progress go on."""
        for acceptor in self._acceptors:
            acceptor.cancel()
        for listening in self._sockets:
            listening.close()

    async def close(self) -> None:
        self.stop_accepting()
        for flow in list(self.table.flows.values()):
            flow.close()
        await self._tasks.cancel()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of this listener's (cancelled when it closes)."""
        return self._tasks.spawn(work)

    async def _accept(self, listening: socket.socket) -> None:
        """Admit each connection before anything of it is read: one over a cap is
        reset with no handshake and no buffer. An admitted socket gets TLS from
        its first byte (a ClientHello read by a plain reader first is lost)."""
        loop = asyncio.get_running_loop()
        while True:
            accepted = await accept(loop, listening)
            if isinstance(accepted, OSError):
                if accepted.errno in OUT_OF_RESOURCES:
                    await asyncio.sleep(ACCEPT_BACKOFF)  # as asyncio's own accept loop does
                continue  # e.g. the peer reset before we accepted
            connection, peer = accepted
            source = self.caps.admit(str(peer[0]))
            if source is None:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                connection.close()  # linger 0: a reset
                continue
            self.spawn(self._serve(connection, source))

    async def _serve(self, connection: socket.socket, source: str) -> None:
        """The TLS handshake (bounded); then the connection is a :class:`StreamConnection`."""
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: StreamConnection(self, source),
                connection,
                ssl=self.context,
                **self._handshake,
            )
        except Exception:  # a failed handshake above all: the connection just goes
            connection.close()
            self.caps.release(source)


async def accept(
    loop: asyncio.AbstractEventLoop, listening: socket.socket
) -> tuple[socket.socket, Any] | OSError:
    """The next connection, or why there was none: handled by the caller, not in
    an ``except`` block that awaits (runtime/aio.py says why)."""
    try:
        return await loop.sock_accept(listening)
    except OSError as exc:
        return exc


#: Messages framed and not yet handled on one connection before reading pauses.
INBOX_LIMIT = 8


@dataclass(frozen=True, slots=True)
class _Broken:
    """The stream can no longer be framed: answer what can be answered, then close."""

    error: ParseError
    pending: bytes


class StreamConnection(asyncio.Protocol):
    """One accepted SIP connection: bytes are framed as they arrive and the
    messages handled one after the other, in order, by one task of the
    connection's (started by its first message, waiting on a future between
    messages: no task made per message); answers are written straight to the
    transport.

    Deadlines without a timer per read: one timer per connection, moved only
    when a partial message starts (``message_timeout``, which bytes trickled
    after it do not extend) — otherwise it finds, when it fires, that the
    connection was busy and sets itself again for the rest of ``idle``.
    """

    def __init__(self, listener: StreamListener, source: str) -> None:
        self.listener = listener
        self.source = source
        self.limits = listener.limits
        self.framer = StreamFramer(preauth_body_bytes=listener.limits.preauth_body_bytes)
        self.loop = asyncio.get_running_loop()
        self.flow: Flow | None = None
        self.inbox: deque[Message | KeepAlive | Malformed | _Broken] = deque()
        self.worker: asyncio.Task[None] | None = None
        #: What the worker waits on while the inbox is empty (None: it is handling).
        self.wakeup: asyncio.Future[None] | None = None
        self.reading = True
        self.gone = False
        #: When a message begun must be complete (None: between messages).
        self.message_deadline: float | None = None
        self.last_active = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is an asyncio.Transport in all but its class.
        transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_AT_ONCE)
        peer = transport.get_extra_info("peername") or ("", 0)
        listener = self.listener
        self.flow = Flow(
            listener.table.new_id(listener.transport),
            listener.transport,
            (str(peer[0]), int(peer[1])),
            transport,
        )
        listener.table.flows[self.flow.id] = self.flow
        FLOWS.inc()
        self.timer = self.loop.call_at(self.last_active + self.limits.idle, self._expire)

    def data_received(self, data: bytes) -> None:
        flow = self.flow
        assert flow is not None
        self.last_active = self.loop.time()
        self.framer.trusted = flow.authenticated
        try:
            items = self.framer.feed(data)
        except ParseError:
            items = []
        self.inbox.extend(items)
        if self.framer.error is not None:
            self.inbox.append(_Broken(self.framer.error, self.framer.pending()))
            self._pause()
        elif not self.framer.buffered:
            self.message_deadline = None
        elif self.message_deadline is None:
            self.message_deadline = self.last_active + self.limits.message_timeout
            self._set_timer(self.message_deadline)
        if len(self.inbox) >= INBOX_LIMIT:
            self._pause()
        if self.inbox:
            self._wake()

    def eof_received(self) -> bool:
        return False  # the transport closes; what was received is still handled

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.timer is not None:
            self.timer.cancel()
        if self.flow is None:  # never made
            self.listener.caps.release(self.source)
            return
        self.flow.lost()
        self._wake()

    def _wake(self) -> None:
        """The worker handles what waits (and, once the peer has gone, ends the flow)."""
        if self.worker is None:
            self.worker = self.listener.spawn(self._work())
        elif self.wakeup is not None:
            self.wakeup.set_result(None)
            self.wakeup = None

    async def _work(self) -> None:
        """Handle what was framed, in order; at the connection's end, end its flow."""
        flow = self.flow
        assert flow is not None
        await finally_await(self._drain(flow), lambda _: self._finish(flow))

    async def _drain(self, flow: Flow) -> None:
        while True:
            while self.inbox:
                await self._handle(flow, self.inbox.popleft())
                if (
                    not self.reading
                    and len(self.inbox) < INBOX_LIMIT // 2
                    and not flow.closed.is_set()
                ):
                    self.reading = True
                    self._transport().resume_reading()
            if self.gone:
                return
            self.wakeup = self.loop.create_future()
            await self.wakeup

    async def _finish(self, flow: Flow) -> None:
        self.worker = self.wakeup = None
        if self.gone:
            await self._end(flow)
        elif self.inbox:  # cancelled while messages waited: the connection goes
            self._transport().abort()

    async def _handle(self, flow: Flow, item: Message | KeepAlive | Malformed | _Broken) -> None:
        if isinstance(item, KeepAlive):
            flow.send(PONG)
        elif isinstance(item, Malformed):
            answer_malformed(flow, item.data, item.error)
        elif isinstance(item, _Broken):
            MALFORMED.labels("closed").inc()
            answer = bad_request_response(item.pending, item.error)
            if answer is not None:
                flow.send_message(answer)
            log.info("malformed SIP stream, closing", extra={"reason": item.error.reason})
            self.inbox.clear()
            flow.close()
        else:  # also once the peer has gone: a BYE sent just before it closed still counts
            RECEIVED("request" if isinstance(item, Request) else "response").inc()
            try:
                await self.listener.handler(flow, item)
            except Exception as exc:
                HANDLER_ERRORS.record("SIP handler", exc)

    async def _end(self, flow: Flow) -> None:
        listener = self.listener
        if listener.table.flows.pop(flow.id, None) is not None:
            FLOWS.dec()
        listener.caps.release(self.source)
        await flow.ended()

    def _expire(self) -> None:
        """The connection's timer: a message not whole in time ends it (and is
        counted); so does ``idle`` of silence with nothing being handled."""
        now = self.loop.time()
        if self.message_deadline is not None and now >= self.message_deadline:
            MALFORMED.labels("timeout").inc()
            self._pause()
            if self.flow is not None:
                self.flow.close()
            return
        idle_until = self.last_active + self.limits.idle
        if self.worker is not None and self.wakeup is None:  # a message is being handled
            idle_until = max(idle_until, now + self.limits.idle)
        if now >= idle_until:
            self._transport().abort()
            return
        self.timer = self.loop.call_at(
            min(idle_until, self.message_deadline or idle_until), self._expire
        )

    def _set_timer(self, when: float) -> None:
        """The timer fires at ``when`` if that is sooner than it would."""
        if self.timer is None or when < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(when, self._expire)

    def _pause(self) -> None:
        if self.reading:
            self.reading = False
            self._transport().pause_reading()

    def _transport(self) -> asyncio.Transport:
        assert self.flow is not None
        return cast(asyncio.Transport, self.flow.wire)


class DatagramListener(asyncio.DatagramProtocol):
    """SIP over UDP (RFC 3261 section 18): one message a datagram, a
    :class:`DatagramFlow` per peer address. Each peer's messages are handled in
    arrival order by a task of its own while it has some (one peer waiting on
    Redis or on a call's plan holds up no other); a peer with INBOX_LIMIT
    messages waiting has the next dropped and counted (UDP retransmits).
    A peer's flow is forgotten when it has been silent ``idle`` seconds, or
    ``held`` seconds while bindings still name it (they end with it). Peers are
    capped like connections (``caps``): a datagram from one more is dropped."""

    def __init__(
        self,
        table: FlowTable,
        handler: Handler,
        idle: float,
        held: float,
        caps: ConnectionCaps | None = None,
    ) -> None:
        self.table = table
        self.handler = handler
        self.idle, self.held = idle, held
        limits = StreamLimits()
        self.caps = caps or ConnectionCaps(
            limits.max_connections, limits.max_connections_per_source
        )
        self.server: asyncio.DatagramTransport | None = None
        self.peers: dict[tuple[str, int], DatagramFlow] = {}
        self._tasks = Tasks()  # the sweep and the peers' workers

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._tasks.spawn(self._sweep())
        return int(self.server.get_extra_info("sockname")[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        await self._tasks.cancel()
        for flow in list(self.peers.values()):
            await self._forget(flow)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        remote = (str(addr[0]), int(addr[1]))
        flow = self.peers.get(remote)
        if flow is None:
            if self.caps.admit(remote[0]) is None:
                return
            flow = DatagramFlow(self.table.new_id("UDP"), "UDP", remote, None, socket=self.server)
            self.peers[remote] = flow
            self.table.flows[flow.id] = flow
            FLOWS.inc()
        flow.last_seen = time.monotonic()
        if not data.strip(b"\r\n\0 "):
            return  # a keep-alive
        try:
            message = parse_message(data)
        except ParseError as exc:
            answer_malformed(flow, data, exc)
            return
        RECEIVED("request" if isinstance(message, Request) else "response").inc()
        if len(flow.inbox) >= INBOX_LIMIT:
            UDP_DROPPED.inc()
            return
        flow.inbox.append(message)
        if flow.worker is None:
            flow.worker = self._tasks.spawn(self._work(flow))

    async def _work(self, flow: DatagramFlow) -> None:
        """Handle the peer's messages, in order, while it has some."""
        try:
            while flow.inbox:
                message = flow.inbox.popleft()
                try:
                    await self.handler(flow, message)
                except Exception as exc:
                    HANDLER_ERRORS.record("SIP handler", exc)
        finally:
            flow.worker = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle, 30.0))
            now = time.monotonic()
            for flow in list(self.peers.values()):
                if now - flow.last_seen > (self.held if flow.bindings else self.idle):
                    await self._forget(flow)

    async def _forget(self, flow: DatagramFlow) -> None:
        if self.peers.pop(flow.remote, None) is not None:
            self.caps.release(source_key(flow.remote[0]))
        if self.table.flows.pop(flow.id, None) is not None:
            FLOWS.dec()
        await flow.ended()
