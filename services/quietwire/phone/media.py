"""The phone's media stream: one UDP port pair, ZRTP on the RTP port, then SRTP.

Nothing leaves this socket in the clear except ZRTP itself: audio is sent only
once the ZRTP engine reports :class:`Secured`, and received RTP is played only
when it authenticates under the negotiated SRTP keys. A failed handshake ends
with :class:`Failed` and silence, never plaintext audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from quietwire.phone.audio import Codec, Decoder, Encoder, LoopingSource, WavRecorder, read_wav
from quietwire.phone.sdp import LocalDescription, Remote
from quietwire.protocols.rtp.demux import PacketKind, classify
from quietwire.protocols.rtp.errors import ParseError as RtpParseError
from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.rtp.srtp import SrtpContext, SrtpError
from quietwire.protocols.zrtp.algorithms import Offer
from quietwire.protocols.zrtp.cache import ZidCache
from quietwire.protocols.zrtp.engine import State, ZrtpEngine
from quietwire.protocols.zrtp.session import DEFAULT_OFFER, EngineConfig, Failed, Secured

log = logging.getLogger(__name__)
TICK = 0.01
FRAME = 0.02


class Sink(Protocol):
    def write(self, pcm: bytes) -> None: ...


class LoopClock:
    def now(self) -> float:
        return asyncio.get_running_loop().time()


class EchoBuffer:
    """What was heard, to be sent back (the echo test): a sink and a source."""

    def __init__(self, samples_per_frame: int) -> None:
        self.size = samples_per_frame * 2
        self.buffer = bytearray()

    def write(self, pcm: bytes) -> None:
        self.buffer += pcm
        del self.buffer[: max(0, len(self.buffer) - self.size * 50)]  # at most a second behind

    def next_frame(self) -> bytes:
        frame = bytes(self.buffer[: self.size]).ljust(self.size, b"\0")
        del self.buffer[: self.size]
        return frame


@dataclass
class Stats:
    zrtp_in: int = 0
    srtp_in: int = 0
    srtp_out: int = 0
    rejected: int = 0
    dropped_clear: int = 0
    other: int = 0


def bind_pair(address: str) -> tuple[socket.socket, socket.socket]:
    """An even RTP port and the odd RTCP port above it (RFC 3550 section 11)."""
    for _ in range(100):
        port = 20000 + 2 * secrets.randbelow(20000)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((address, port))
            rtcp.bind((address, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise OSError("no free RTP port pair")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("media socket error: %s", exc)


@dataclass(frozen=True, slots=True)
class Audio:
    """What the phone plays and where what it hears goes; opened at the codec's
    rate once the call's codec is known (``play`` and ``record`` are WAV files;
    ``echo`` sends back what it hears instead of playing)."""

    play: Path | None = None
    record: Path | None = None
    echo: bool = False


@dataclass(eq=False)
class MediaSession:
    address: str
    cache: ZidCache
    zid: bytes
    audio: Audio = Audio()
    stats: Stats = field(default_factory=Stats)
    offer: Offer = DEFAULT_OFFER

    def __post_init__(self) -> None:
        self.rtp_socket, self.rtcp_socket = bind_pair(self.address)
        self.port = self.rtp_socket.getsockname()[1]
        self.ssrc = secrets.randbits(32)
        config = EngineConfig(zid=self.zid, offer=self.offer)
        self.engine = ZrtpEngine(config, LoopClock(), self.ssrc, self.cache)
        #: The SDP this phone sends for this stream.
        self.sdp = LocalDescription(self.address, self.port, self.engine.hello_hash)
        self.remote: Remote | None = None
        self.srtp: SrtpContext | None = None
        self.secured: asyncio.Future[Secured | Failed] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._decoder: Decoder | None = None
        self.sink: Sink | None = None
        self.pcm = b""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._received), sock=self.rtp_socket
        )
        rtcp, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(lambda data, addr: None), sock=self.rtcp_socket
        )
        self._transport, self._rtcp_transport = transport, rtcp

    def start(self, remote: Remote) -> None:
        """The peer is known (its SDP): start ZRTP, and audio once secure."""
        self.remote = remote
        if remote.zrtp_hash:
            self.engine.set_peer_hello_hash(remote.zrtp_hash)
        self._open_audio(remote.codec)
        self._decoder = Decoder(remote.codec)
        self.engine.start()
        self._flush()
        self._tasks.append(asyncio.create_task(self._timers()))

    def move(self, remote: Remote) -> str | None:
        """The peer's media moved (a re-INVITE: its relay changed): from now on
        send there, in the same ZRTP/SRTP session. Refused, with the reason, when
        it would change the session instead: another codec or another zrtp-hash."""
        if self.remote is None:
            return "no media session yet"
        if remote.codec != self.remote.codec:
            return "a change of codec"
        if remote.zrtp_hash != self.remote.zrtp_hash:
            return "a change of zrtp-hash"
        self.remote = remote
        return None

    def _open_audio(self, codec: Codec) -> None:
        """Source and sink at the codec's own PCM rate (WAV resampled on read)."""
        audio = self.audio
        if audio.echo:
            self.sink = EchoBuffer(codec.samples_per_frame)
            return
        if audio.play is not None:
            self.pcm = read_wav(audio.play, codec.pcm_rate)
        if audio.record is not None:
            self.sink = WavRecorder(audio.record, codec.pcm_rate)

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind = classify(data)
        if kind is PacketKind.ZRTP:
            self.stats.zrtp_in += 1
            self.engine.receive(data)
            self._flush()
        elif kind is PacketKind.RTP:
            self._audio(data)
        else:
            self.stats.other += 1

    def _audio(self, data: bytes) -> None:
        if self.srtp is None or self._decoder is None:
            self.stats.dropped_clear += 1  # nothing plays before the call is secure
            return
        try:
            packet = Rtp.parse(self.srtp.unprotect(data))
        except (SrtpError, RtpParseError):
            self.stats.rejected += 1
            return
        self.stats.srtp_in += 1
        pcm = self._decoder.decode(packet.payload, packet.timestamp)
        if self.sink is not None:
            self.sink.write(pcm)

    def _flush(self) -> None:
        out, self.engine.outbox = self.engine.outbox, []
        if self.remote is None or self._transport is None:
            self.engine.outbox = out  # hold until we know where the peer is
            return
        for packet in out:
            self._transport.sendto(packet, (self.remote.address, self.remote.port))
        for event in self.engine.events:
            self._event(event)
        self.engine.events.clear()

    def _event(self, event: Secured | Failed) -> None:
        if isinstance(event, Secured) and self.engine.srtp is not None:
            self.srtp = SrtpContext(self.engine.srtp.keying())
            self._tasks.append(asyncio.create_task(self._send_audio()))
        if not self.secured.done():
            self.secured.set_result(event)

    async def _timers(self) -> None:
        while self.engine.state not in (State.SECURE, State.FAILED):
            await asyncio.sleep(TICK)
            self.engine.poll()
            self._flush()

    async def _send_audio(self) -> None:
        assert self.remote is not None and self.srtp is not None and self._transport is not None
        codec: Codec = self.remote.codec
        encoder = Encoder(codec)
        source: LoopingSource | EchoBuffer = (
            self.sink
            if isinstance(self.sink, EchoBuffer)
            else LoopingSource(self.pcm, codec.samples_per_frame)
        )
        loop = asyncio.get_running_loop()
        start, frames = loop.time(), 0
        sequence, timestamp = secrets.randbelow(2**15), secrets.randbits(31)
        while True:
            for payload in encoder.encode(source.next_frame()):
                rtp = Rtp(codec.payload_type, sequence, timestamp, self.ssrc, payload)
                self._transport.sendto(
                    self.srtp.protect(rtp.serialize()), (self.remote.address, self.remote.port)
                )
                self.stats.srtp_out += 1
                sequence = (sequence + 1) & 0xFFFF
            timestamp = (timestamp + codec.timestamp_step) & 0xFFFFFFFF
            frames += 1
            await asyncio.sleep(max(0.0, start + frames * FRAME - loop.time()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for transport in (self._transport, self._rtcp_transport):
            if transport is not None:
                transport.close()
        if isinstance(self.sink, WavRecorder):
            self.sink.close()
