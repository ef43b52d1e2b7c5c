"""SIP over TLS (and, when enabled, plain TCP) connections — flows, RFC 5626 —
of one signaling replica.

Each accepted connection is a :class:`Flow` with an id unique across
replicas that also says its transport (``<replica>.<n>`` over TLS,
``<replica>.t<n>`` over TCP), a bounded send queue drained by one writer task,
and a framer. Messages go to the handler; a malformed request is answered 400
when it can be, anything unparsable is counted and, on a stream, ends the
connection (the framing can no longer be trusted). The listener never stops
for one bad peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.framing import PONG, KeepAlive, Malformed, StreamFramer
from quietwire.protocols.sip.message import Headers, Message, Request, Response, split_head

log = logging.getLogger(__name__)

#: Messages waiting to be written on one connection before new ones are refused.
SEND_QUEUE_LIMIT = 256
IDLE_TIMEOUT = 300.0

FLOWS = Gauge("quietwire_sip_flows", "Open SIP connections")
RECEIVED = Counter("quietwire_sip_messages_received", "SIP messages received", ["kind"])
MALFORMED = Counter("quietwire_sip_malformed", "Malformed SIP input", ["action"])
QUEUE_FULL = Counter("quietwire_sip_send_queue_full", "Messages refused: send queue full")


@dataclass(eq=False)
class Flow:
    id: str
    transport: str
    remote: tuple[str, int]
    writer: asyncio.StreamWriter
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Run when the connection ends (the registrar drops the flow's bindings: RFC 5626).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Bindings registered over this flow: (aor, contact, instance, reg-id).
    bindings: set[tuple[str, str, str, int]] = field(default_factory=set)

    def send(self, data: bytes) -> bool:
        """Queue bytes for the peer; False when the queue is full or the flow is gone."""
        if self.closed.is_set():
            return False
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            QUEUE_FULL.inc()
            return False
        return True

    def send_message(self, message: Message) -> bool:
        return self.send(message.serialize())

    async def _write_loop(self) -> None:
        while True:
            data = await self.queue.get()
            self.writer.write(data)
            await self.writer.drain()

    def close(self) -> None:
        self.closed.set()
        self.writer.close()


Handler = Callable[[Flow, Message], Awaitable[None]]


def flow_transport(flow_id: str) -> str:
    """``TLS`` or ``TCP``: what a flow id says of its connection (on any replica)."""
    return "TCP" if flow_id.rsplit(".", 1)[-1].startswith("t") else "TLS"


class FlowTable:
    """The open flows of this replica, by id."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.flows: dict[str, Flow] = {}
        self._ids = itertools.count(1)

    def new_id(self, transport: str = "TLS") -> str:
        return f"{self.replica}.{'t' if transport == 'TCP' else ''}{next(self._ids)}"

    def get(self, flow_id: str) -> Flow | None:
        return self.flows.get(flow_id)


def bad_request_response(data: bytes, error: ParseError) -> Response | None:
    """A 4xx for an unparsable request, when enough of it is readable to answer."""
    head, _ = split_head(data)
    lines = head.decode("utf-8", "replace").split("\r\n")
    if not lines or lines[0].startswith("SIP/"):
        return None
    wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in wanted:
            headers.add(name.strip(), value.strip())
    if headers.get("Via") is None:
        return None
    return Response(headers, b"", error.status, error.reason[:60] or "Bad Request")


class StreamListener:
    """Accepts SIP connections — over TLS with a ``context``, plain TCP without —
    and feeds their messages to ``handler``."""

    def __init__(
        self,
        table: FlowTable,
        handler: Handler,
        context: ssl.SSLContext | None,
        idle: float = IDLE_TIMEOUT,
    ) -> None:
        self.table = table
        self.handler = handler
        self.context = context
        self.transport = "TLS" if context is not None else "TCP"
        self.idle = idle
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.context,
            ssl_handshake_timeout=10 if self.context is not None else None,
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for flow in list(self.table.flows.values()):
            flow.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        transport = self.transport
        flow = Flow(self.table.new_id(transport), transport, (str(peer[0]), int(peer[1])), writer)
        self.table.flows[flow.id] = flow
        FLOWS.inc()
        sender = asyncio.create_task(flow._write_loop())
        framer = StreamFramer()
        try:
            while not flow.closed.is_set():
                data = await asyncio.wait_for(reader.read(65536), timeout=self.idle)
                if not data:
                    break
                if not await self._receive(flow, framer, data):
                    break
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
            flow.close()
            for hook in flow.on_close:
                try:
                    await hook()
                except Exception:
                    log.exception("flow close hook failed")

    async def _receive(self, flow: Flow, framer: StreamFramer, data: bytes) -> bool:
        """Handle what ``data`` completes; False when the connection must end."""
        try:
            items = framer.feed(data)
        except ParseError as exc:
            MALFORMED.labels("closed").inc()
            answer = bad_request_response(bytes(data), exc)
            if answer is not None:
                flow.send_message(answer)
            log.info("malformed SIP stream, closing", extra={"reason": exc.reason})
            return False
        for item in items:
            if isinstance(item, KeepAlive):
                flow.send(PONG)
                continue
            if isinstance(item, Malformed):
                answer = bad_request_response(item.data, item.error)
                MALFORMED.labels("answered" if answer else "dropped").inc()
                if answer is not None:
                    flow.send_message(answer)
                continue
            RECEIVED.labels("request" if isinstance(item, Request) else "response").inc()
            try:
                await self.handler(flow, item)
            except Exception:
                log.exception("SIP handler failed")
        return True
