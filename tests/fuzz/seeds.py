"""The seed corpus: RFC 4475's messages, our vectors and real captures, per target."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

from quietwire.protocols.rtp.packets import Rtp
from quietwire.protocols.sip.digest import (
    Challenge,
    DigestAlgorithm,
    client_credentials,
    format_credentials,
)
from quietwire.protocols.sip.message import parse_message
from quietwire.protocols.zrtp.messages import MESSAGE_TYPES

from tests.vectors.rfc4475 import CASES

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
VECTORS = HERE.parent / "vectors" / "data"
PING = b"\r\n\r\n"


def _sip() -> Iterator[bytes]:
    for case in CASES.values():
        yield case.data
    for capture in sorted((VECTORS / "linphone").glob("*.sip")):
        yield capture.read_bytes()


def _sdp() -> Iterator[bytes]:
    for data in _sip():
        try:
            message = parse_message(data)
        except ValueError:
            continue
        if message.body.startswith(b"v=0"):
            yield message.body


def _zrtp_packets() -> Iterator[bytes]:
    exchange = json.loads((VECTORS / "bzrtp_exchange.json").read_text(encoding="utf-8"))
    for packet in exchange["packets"]:
        yield bytes.fromhex(packet["hex"])


def seeds(target: str) -> Iterator[bytes]:
    if target == "sip_message":
        yield from _sip()
    elif target == "sip_stream":
        messages = list(_sip())
        yield b"\x01\x02\x03\x04" + PING + b"\r\n".join(messages[:3])
        for i, data in enumerate(messages):
            cuts = bytes([i * 5 % 256, 128, (i * 37) % 256, 255])
            yield cuts + data + PING + messages[(i + 1) % len(messages)]
    elif target == "sdp":
        yield from _sdp()
    elif target == "zrtp":
        for packet in _zrtp_packets():
            yield packet[12:-4]  # the message, without envelope and CRC
        # Every message type (a dict lookup the fuzzer cannot solve), bodies of
        # the lengths the types have (RFC 6189 section 5).
        for block in MESSAGE_TYPES:
            for words in (0, 1, 2, 3, 4, 6, 7, 10, 13):
                yield struct.pack("!HH", 0x505A, 3 + words) + block + bytes(4 * words)
    elif target == "rtp_demux":
        yield from _zrtp_packets()
        yield Rtp(0, 1, 160, 0x1234, b"\xff" * 160, marker=True).serialize()
        yield Rtp(8, 65535, 2**32 - 1, 1, b"").serialize()
        # RFC 5389 Binding request: type, length, magic cookie, transaction id.
        yield struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(range(12))
        yield b"\x16\xfe\xfd" + bytes(10)  # a DTLS record header
    elif target == "digest":
        for capture in sorted((VECTORS / "linphone").glob("*-authorized.sip")):
            message = parse_message(capture.read_bytes())
            for name in ("Authorization", "Proxy-Authorization"):
                value = message.headers.get(name)
                if value is not None:
                    yield value.encode()
        for algorithm in DigestAlgorithm:
            challenge = Challenge("127.0.0.1", "bm9uY2U", algorithm, "opaque", True)
            yield str(challenge).encode()
            answer = client_credentials(
                challenge, "alice", "secret", "INVITE", "sip:bob@127.0.0.1", 1, "c"
            )
            yield format_credentials(answer).encode()
    else:
        raise KeyError(target)


def write(target: str) -> int:
    """(Re)write ``corpus/TARGET`` from the seeds; how many files it holds."""
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for data in seeds(target):
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)  # noqa: S324 - a name
    return len(list(directory.iterdir()))
