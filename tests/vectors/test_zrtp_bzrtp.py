"""ZRTP against known answers: bzrtp's captured exchange, GNU ZRTP's KDF patterns,
a libzrtpcpp Hello, and the SAS example of RFC 6189 section 5.1.6."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from quietwire.protocols.zrtp import kdf
from quietwire.protocols.zrtp.algorithms import CipherType, HashType
from quietwire.protocols.zrtp.errors import ParseError
from quietwire.protocols.zrtp.messages import (
    Commit,
    Confirm1,
    Confirm2,
    ConfirmPlaintext,
    DHPart1,
    DHPart2,
    Hello,
    Message,
    parse_message,
)
from quietwire.protocols.zrtp.packet import ZrtpPacket, crc
from quietwire.protocols.zrtp.sas import render_b32, render_b256

DATA = Path(__file__).parent / "data"
EXCHANGE: dict[str, Any] = json.loads((DATA / "bzrtp_exchange.json").read_text())
KDF: dict[str, Any] = json.loads((DATA / "bzrtp_kdf.json").read_text())


def packet(name: str) -> bytes:
    return bytes.fromhex(next(p["hex"] for p in EXCHANGE["packets"] if p["name"] == name))


def message(name: str) -> Message:
    return parse_message(ZrtpPacket.parse(packet(name)).message)


@pytest.mark.parametrize("entry", EXCHANGE["packets"], ids=lambda p: p["name"])
def test_captured_packets_round_trip(entry: dict[str, str]) -> None:
    raw = bytes.fromhex(entry["hex"])
    parsed = ZrtpPacket.parse(raw)
    assert parsed.ssrc == int(entry["ssrc"], 16)
    assert parsed.sequence == EXCHANGE["sequence"][entry["name"]]
    assert parse_message(parsed.message).serialize() == parsed.message
    assert parsed.serialize() == raw


def test_crc_least_significant_byte_first() -> None:
    hello_ack = packet("helloack_12345678")
    assert crc(hello_ack[:-4]) == bytes.fromhex("770e4407")
    assert int.from_bytes(hello_ack[-4:], "little") == 0x07440E77


def test_corrupted_packet_refused() -> None:
    raw = bytearray(packet("commit_87654321"))
    raw[40] ^= 1
    with pytest.raises(ParseError, match="bad CRC"):
        ZrtpPacket.parse(bytes(raw))


@pytest.mark.parametrize("ssrc", ["12345678", "87654321"])
def test_zrtp_hash_of_hello(ssrc: str) -> None:
    hello = ZrtpPacket.parse(packet(f"hello_{ssrc}")).message
    assert kdf.zrtp_hash(hello) == EXCHANGE["zrtp_hash"][ssrc]


def test_libzrtpcpp_hello_keeps_unknown_algorithms() -> None:
    raw = bytes.fromhex(EXCHANGE["zrtpcpp_hello"]["hex"])
    parsed = ZrtpPacket.parse(raw)
    hello = parse_message(parsed.message)
    assert isinstance(hello, Hello)
    assert hello.client_id == b"PJS ZRTP 3.0.0  "
    assert hello.hashes == (b"S384", b"S256")
    assert b"2FS3" in hello.ciphers
    assert hello.key_agreements == (b"EC25", b"DH3k", b"EC38", b"DH2k", b"Mult")
    assert hello.serialize() == parsed.message
    assert kdf.zrtp_hash(parsed.message) == EXCHANGE["zrtpcpp_hello"]["zrtp_hash"]


@pytest.mark.parametrize("ssrc", ["12345678", "87654321"])
def test_hash_chain_ends_in_hello_h3(ssrc: str) -> None:
    chain = kdf.HashChain.from_h0(bytes.fromhex(EXCHANGE["h0"][ssrc]))
    hello = message(f"hello_{ssrc}")
    assert isinstance(hello, Hello)
    assert hello.h3 == chain.h3
    assert kdf.mac_ok(chain.h2, hello.mac_input, hello.mac)


def test_every_mac_of_the_exchange() -> None:
    initiator = kdf.HashChain.from_h0(bytes.fromhex(EXCHANGE["h0"]["87654321"]))
    responder = kdf.HashChain.from_h0(bytes.fromhex(EXCHANGE["h0"]["12345678"]))
    commit, dh1, dh2 = (
        message(n) for n in ("commit_87654321", "dhpart1_12345678", "dhpart2_87654321")
    )
    assert isinstance(commit, Commit)
    assert isinstance(dh1, DHPart1)
    assert isinstance(dh2, DHPart2)
    assert commit.h2 == initiator.h2
    assert kdf.mac_ok(initiator.h1, commit.mac_input, commit.mac)
    assert dh1.h1 == responder.h1
    assert kdf.mac_ok(responder.h0, dh1.mac_input, dh1.mac)
    assert dh2.h1 == initiator.h1
    assert kdf.mac_ok(initiator.h0, dh2.mac_input, dh2.mac)
    tampered = DHPart2(dh2.h1, dh2.rs1_id, dh2.rs2_id, dh2.aux_id, dh2.pbx_id, dh2.pv[:-1] + b"\0")
    assert not kdf.mac_ok(initiator.h0, tampered.mac_input, dh2.mac)


def test_hvi_binds_dhpart2_to_responder_hello() -> None:
    commit = message("commit_87654321")
    assert isinstance(commit, Commit)
    dh2 = ZrtpPacket.parse(packet("dhpart2_87654321")).message
    responder_hello = ZrtpPacket.parse(packet("hello_12345678")).message
    assert kdf.hvi(HashType.S256, dh2, responder_hello) == commit.hvi
    initiator_hello = ZrtpPacket.parse(packet("hello_87654321")).message
    assert kdf.hvi(HashType.S256, dh2, initiator_hello) != commit.hvi


@pytest.mark.parametrize(
    ("name", "zrtp_key", "mac_key", "ssrc"),
    [
        ("confirm1_12345678", "zrtpkeyr", "mackeyr", "12345678"),
        ("confirm2_87654321", "zrtpkeyi", "mackeyi", "87654321"),
    ],
)
def test_confirm_decrypts_to_h0(name: str, zrtp_key: str, mac_key: str, ssrc: str) -> None:
    confirm = message(name)
    assert isinstance(confirm, Confirm1 | Confirm2)
    key, mac = bytes.fromhex(EXCHANGE[zrtp_key]), bytes.fromhex(EXCHANGE[mac_key])
    assert kdf.confirm_mac(HashType.S256, mac, confirm.encrypted) == confirm.confirm_mac
    plain = ConfirmPlaintext.parse(kdf.cfb_decrypt(key, confirm.cfb_iv, confirm.encrypted))
    assert plain.h0 == bytes.fromhex(EXCHANGE["h0"][ssrc])
    again = kdf.cfb_encrypt(key, confirm.cfb_iv, plain.serialize())
    assert again == confirm.encrypted


@pytest.mark.parametrize(("label", "length", "expected"), KDF["vectors"])
def test_kdf_gnu_zrtp_patterns(label: str, length: int, expected: str) -> None:
    out = kdf.kdf(
        HashType.S256,
        bytes.fromhex(KDF["key"]),
        label.encode(),
        bytes.fromhex(KDF["context"]),
        length * 8,
    )
    assert out.hex() == expected


def test_derive_matches_the_single_kdf_calls() -> None:
    keys = kdf.derive(
        HashType.S256, CipherType.AES1, bytes.fromhex(KDF["key"]), bytes.fromhex(KDF["context"])
    )
    expected = {label: value for label, _, value in KDF["vectors"]}
    assert keys.srtp_key_r.hex() == expected["Responder SRTP master key"]
    assert keys.srtp_salt_r.hex() == expected["Responder SRTP master salt"]
    assert keys.mac_key_i.hex() == expected["Initiator HMAC key"]
    assert keys.zrtp_key_i.hex() == expected["Initiator ZRTP key"]
    assert keys.new_rs1.hex() == expected["retained secret"]
    assert keys.sas_value == 0xD269B071
    assert "hidden" in repr(keys)


def test_sas_renderings_rfc_example() -> None:
    assert render_b32(0xD269B071) == "4jw5"
    assert render_b256(0xD269B071) == "standard guitarist"
