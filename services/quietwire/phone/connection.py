"""A SIP-over-TLS connection from a phone to its registrar, kept open for incoming requests.

The server certificate is verified against a CA file; the phone never listens
(like Linphone): requests to it come back down this connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from quietwire.protocols.sip.framing import PONG, KeepAlive, Malformed, StreamFramer
from quietwire.protocols.sip.message import Message


class SipConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.malformed = 0
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

    async def receive(self, timeout: float = 5.0) -> Message:
        return await asyncio.wait_for(self.incoming.get(), timeout)

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await self.writer.wait_closed()
