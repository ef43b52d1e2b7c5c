"""SIP over TLS (and, when enabled, plain TCP and UDP) — flows, RFC 5626 — of
one signaling replica.

Each accepted connection is a :class:`Flow` with an id unique across
replicas that also says its transport (``<replica>.<n>`` over TLS,
``<replica>.t<n>`` over TCP, ``<replica>.u<n>`` for a UDP peer address), a
bounded send queue drained by one writer task,
and a framer. Messages go to the handler; a malformed request is answered 400
when it can be, anything unparsable is counted and, on a stream, ends the
connection (the framing can no longer be trusted) once its answer is written.
The listener never stops for one bad peer, and no peer holds more than
:class:`StreamLimits` allow: connections are capped in total and per source, a
message must arrive whole within a deadline that trickled bytes do not extend,
and a small body is all a message may carry before someone authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
from quietwire.runtime.metrics import Series
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

FLOWS = Gauge("quietwire_sip_flows", "Open SIP connections")
RECEIVED = Series(Counter("quietwire_sip_messages_received", "SIP messages received", ["kind"]))
MALFORMED = Counter("quietwire_sip_malformed", "Malformed SIP input", ["action"])
QUEUE_FULL = Counter("quietwire_sip_send_queue_full", "Messages refused: send queue full")
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
    writer: asyncio.StreamWriter | None
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Run when the connection ends (the registrar drops the flow's bindings: RFC 5626).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Bindings registered over this flow: (aor, contact, instance, reg-id).
    bindings: set[tuple[str, str, str, int]] = field(default_factory=set)
    #: Someone passed digest authentication on this flow: its messages may be larger.
    authenticated: bool = False

    def send(self, data: bytes) -> bool:
        """Queue bytes for the peer; False when the queue is full or the flow is gone.

        With nothing queued and the connection taking data, they are written at
        once (the writer task, woken for each message, was most of a reply's cost);
        otherwise the writer task writes them in order, waiting on the peer.
        """
        if self.closed.is_set():
            return False
        writer = self.writer
        if (
            writer is not None
            and self.queue.empty()
            and writer.transport.get_write_buffer_size() < WRITE_AT_ONCE
            and not writer.transport.is_closing()
        ):
            writer.write(data)
            return True
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            QUEUE_FULL.inc()
            return False
        return True

    def send_message(self, message: Message) -> bool:
        sent = self.send(message.serialize())
        if sent and isinstance(message, Response):
            count_response(message)
        return sent

    async def _write_loop(self) -> None:
        assert self.writer is not None
        while True:
            data = await self.queue.get()
            self.writer.write(data)
            await self.writer.drain()

    def close(self) -> None:
        self.closed.set()
        if self.writer is not None:
            self.writer.close()

    async def flush(self) -> None:
        """Write what is still queued (the writer task is stopped), for a bounded time."""
        if self.writer is None:
            return
        while not self.queue.empty():
            self.writer.write(self.queue.get_nowait())
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError, OSError):
            await asyncio.wait_for(self.writer.drain(), FLUSH_TIMEOUT)

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
        self._tasks: set[asyncio.Task[None]] = set()

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listening: socket.socket) -> None:
        """Admit each connection before anything of it is read: one over a cap is
        reset with no handshake and no buffer. An admitted socket gets TLS from
        its first byte (a ClientHello read by a plain reader first is lost)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, peer = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    await asyncio.sleep(ACCEPT_BACKOFF)  # as asyncio's own accept loop does
                continue  # e.g. the peer reset before we accepted
            source = self.caps.admit(str(peer[0]))
            if source is None:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                connection.close()  # linger 0: a reset
                continue
            self._spawn(self._serve(connection, source))

    async def _serve(self, connection: socket.socket, source: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, connection, ssl=self.context, **self._handshake
            )
        except Exception:  # a failed handshake above all: the connection just goes
            connection.close()
            self.caps.release(source)
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            await self._run(reader, writer)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            writer.transport.abort()
        except Exception as exc:
            HANDLER_ERRORS.record("SIP connection", exc)
            writer.transport.abort()
        finally:
            self.caps.release(source)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        transport = self.transport
        flow = Flow(self.table.new_id(transport), transport, (str(peer[0]), int(peer[1])), writer)
        self.table.flows[flow.id] = flow
        FLOWS.inc()
        sender = asyncio.create_task(flow._write_loop())
        framer = StreamFramer(preauth_body_bytes=self.limits.preauth_body_bytes)
        loop = asyncio.get_running_loop()
        #: When the message being received must be complete (None: between messages).
        deadline: float | None = None
        try:
            # One timeout for the connection's life, moved for each read (and
            # off while a message is handled): no task made per read.
            async with asyncio.timeout(None) as reading:
                while not flow.closed.is_set():
                    wait = self.limits.idle
                    if deadline is not None:
                        wait = deadline - loop.time()
                        if wait <= 0:
                            MALFORMED.labels("timeout").inc()
                            break
                    reading.reschedule(loop.time() + wait)
                    data = await reader.read(65536)
                    reading.reschedule(None)
                    if not data:
                        break
                    framer.trusted = flow.authenticated
                    if not await self._receive(flow, framer, data):
                        break
                    if not framer.buffered:
                        deadline = None
                    elif deadline is None:
                        deadline = loop.time() + self.limits.message_timeout
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.table.flows.pop(flow.id, None)
            FLOWS.dec()
            sender.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionError, ssl.SSLError, OSError
            ):
                await sender
            await flow.flush()
            await flow.ended()

    async def _receive(self, flow: Flow, framer: StreamFramer, data: bytes) -> bool:
        """Handle what ``data`` completes; False when the connection must end."""
        try:
            items = framer.feed(data)
        except ParseError:
            items = []
        for item in items:
            if isinstance(item, KeepAlive):
                flow.send(PONG)
                continue
            if isinstance(item, Malformed):
                answer_malformed(flow, item.data, item.error)
                continue
            RECEIVED("request" if isinstance(item, Request) else "response").inc()
            try:
                await self.handler(flow, item)
            except Exception as exc:
                HANDLER_ERRORS.record("SIP handler", exc)
        if framer.error is not None:
            MALFORMED.labels("closed").inc()
            answer = bad_request_response(framer.pending(), framer.error)
            if answer is not None:
                flow.send_message(answer)
            log.info("malformed SIP stream, closing", extra={"reason": framer.error.reason})
            return False
        return True


class DatagramListener(asyncio.DatagramProtocol):
    """SIP over UDP (RFC 3261 section 18): one message a datagram, a
    :class:`DatagramFlow` per peer address, messages handled in arrival order.
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
        self._inbox: asyncio.Queue[tuple[DatagramFlow, Message]] = asyncio.Queue(4096)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._sweep())]
        return int(self.server.get_extra_info("sockname")[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
        try:
            self._inbox.put_nowait((flow, message))
        except asyncio.QueueFull:
            QUEUE_FULL.inc()

    async def _serve(self) -> None:
        while True:
            flow, message = await self._inbox.get()
            try:
                await self.handler(flow, message)
            except Exception as exc:
                HANDLER_ERRORS.record("SIP handler", exc)

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
