"""A SIP-over-TLS connection from a phone to its registrar, kept open for incoming requests.

The server certificate is verified against a CA file; the phone never listens
(like Linphone): requests to it come back down this connection. The phone keeps
it alive and tells a dead one with RFC 5626 keep-alives (:meth:`alive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from quietwire.protocols.sip.framing import PING, PONG, KeepAlive, Malformed, StreamFramer
from quietwire.protocols.sip.message import Message

#: RFC 5626 section 4.4.1: a pong not back within 10 s means the flow failed.
PONG_TIMEOUT = 10.0


class SipConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.malformed = 0
        self._heard = asyncio.Event()  # set by any bytes from the server
        local = writer.get_extra_info("sockname") or ("127.0.0.1", 0)
        self.local = (str(local[0]), int(local[1]))
        self._reader_task = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, host: str, port: int, ca: Path | None, server_name: str | None = None
    ) -> SipConnection:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=server_name or host
        )
        return cls(reader, writer)

    async def _read(self) -> None:
        framer = StreamFramer()
        try:
            while data := await self.reader.read(65536):
                self._heard.set()
                for item in framer.feed(data):
                    if isinstance(item, KeepAlive):
                        self.writer.write(PONG)
                    elif isinstance(item, Malformed):
                        self.malformed += 1
                    else:
                        self.incoming.put_nowait(item)
        except (ConnectionError, ssl.SSLError, OSError, ValueError):
            pass
        finally:
            self.closed.set()

    async def send(self, message: Message) -> None:
        self.writer.write(message.serialize())
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def alive(self, timeout: float = PONG_TIMEOUT) -> bool:
        """Whether the flow still works: a CRLFCRLF ping, and anything back (the
        CRLF pong, or a message) within ``timeout`` (RFC 5626 section 4.4.1)."""
        if self.closed.is_set():
            return False
        self._heard.clear()
        try:
            await self.send_raw(PING)
        except (ConnectionError, ssl.SSLError, OSError):
            return False
        heard = asyncio.ensure_future(self._heard.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait({heard, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        heard.cancel()
        closed.cancel()
        return self._heard.is_set() and not self.closed.is_set()

    async def receive(self, timeout: float = 5.0) -> Message:
        return await asyncio.wait_for(self.incoming.get(), timeout)

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await self.writer.wait_closed()
