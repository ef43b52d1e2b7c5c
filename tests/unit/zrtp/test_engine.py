"""The ZRTP state machine end to end between two engines: every key agreement,
contention, loss, key continuity, and every way it must refuse to go secure."""

from __future__ import annotations

import dataclasses
import os

import pytest
from quietwire.protocols.zrtp.algorithms import Offer, SasType
from quietwire.protocols.zrtp.engine import State
from quietwire.protocols.zrtp.errors import ErrorCode
from quietwire.protocols.zrtp.messages import Error
from quietwire.protocols.zrtp.packet import ZrtpPacket, crc
from quietwire.protocols.zrtp.session import EngineConfig, Failed, Role

from tests.unit.zrtp.harness import Pair, call_again, endpoint, kind, pair


def start(p: Pair) -> None:
    p.alice.engine.start()
    p.bob.engine.start()


def only(key_agreement: bytes, sas: bytes = b"B32 ", hash_: bytes = b"S256") -> EngineConfig:
    offer = Offer(hashes=(hash_,), key_agreements=(key_agreement, b"Mult"), sas_types=(sas,))
    return EngineConfig(zid=os.urandom(12), offer=offer)


@pytest.mark.parametrize("ka", [b"DH3k", b"DH2k", b"EC25", b"EC38", b"X255"])
@pytest.mark.parametrize("hash_", [b"S256", b"S384"])
def test_secure_with_every_key_agreement(ka: bytes, hash_: bytes) -> None:
    p = pair(only(ka, hash_=hash_), only(ka, hash_=hash_))
    start(p)
    p.run()
    a, b = p.secured()
    assert a.sas == b.sas
    assert len(a.sas) == 4
    assert a.suite == b.suite
    assert a.suite.key_agreement.value == ka
    assert a.suite.hash.value == hash_
    assert not a.sas_verified
    assert not a.cache_mismatch
    ka_keys, kb_keys = p.alice.engine.srtp, p.bob.engine.srtp
    assert ka_keys is not None and kb_keys is not None
    assert ka_keys.send_key == kb_keys.receive_key
    assert ka_keys.send_salt == kb_keys.receive_salt
    assert kb_keys.send_key == ka_keys.receive_key
    assert len(ka_keys.send_key) == 16 and len(ka_keys.send_salt) == 14
    assert ka_keys.send_key != ka_keys.receive_key


def test_both_commit_higher_hvi_wins() -> None:
    """Linphone's normal path: both sides send Commit at once (RFC 6189 section 4.2)."""
    p = pair()
    start(p)
    p.run()
    a, b = p.secured()
    assert a.sas == b.sas
    assert [kind for who, kind in p.wire].count("Commit") >= 2
    roles = {p.alice.engine.role, p.bob.engine.role}
    assert roles == {Role.INITIATOR, Role.RESPONDER}


def test_b256_rendering() -> None:
    p = pair(only(b"X255", sas=b"B256"), only(b"X255", sas=b"B256"))
    start(p)
    p.run()
    a, b = p.secured()
    assert a.sas_type is SasType.B256
    assert a.sas == b.sas and len(a.sas.split()) == 2


MESSAGES = ("Hello", "HelloACK", "Commit", "DHPart1", "DHPart2", "Confirm1", "Confirm2", "Conf2ACK")


@pytest.mark.parametrize("victim", MESSAGES)
def test_survives_loss_of_a_message(victim: str) -> None:
    dropped: set[str] = set()

    def lossy(src: str, packet: bytes) -> bytes | None:
        if kind(packet) == victim and victim not in dropped:
            dropped.add(victim)
            return None
        return packet

    p = pair(only(b"X255"), EngineConfig(zid=os.urandom(12), initiate=False))
    start(p)
    p.run(lossy)
    a, b = p.secured()
    assert a.sas == b.sas
    assert dropped == {victim}


def test_key_continuity_and_verified_flag() -> None:
    first = pair(only(b"X255"), only(b"X255"))
    start(first)
    first.run()
    first.alice.engine.mark_sas_verified()
    first.bob.engine.mark_sas_verified()

    second = call_again(first)
    start(second)
    second.run()
    a, b = second.secured()
    assert a.sas == b.sas
    assert a.sas_verified and b.sas_verified
    assert not a.cache_mismatch

    third = call_again(second)
    start(third)
    third.run()
    assert all(s.sas_verified for s in third.secured())


def test_cache_mismatch_is_reported_and_clears_verified() -> None:
    first = pair(only(b"X255"), only(b"X255"))
    start(first)
    first.run()
    first.alice.engine.mark_sas_verified()
    first.bob.engine.mark_sas_verified()
    bob_zid = first.bob.config.zid
    # Bob loses his cache (reinstall), or someone else answers with Bob's ZID.
    first.bob.cache.entries.clear()

    second = call_again(first)
    start(second)
    second.run()
    a, _ = second.secured()
    assert a.cache_mismatch
    assert not a.sas_verified
    entry = second.alice.cache.get(bob_zid)
    assert entry is not None and not entry.sas_verified


def test_multistream_after_dh() -> None:
    first = pair(only(b"DH3k"), only(b"DH3k"))
    start(first)
    first.run()
    a_secured, _ = first.secured()
    clock = first.clock
    video = Pair(
        endpoint(
            "alice",
            clock,
            first.alice.config,
            first.alice.cache,
            session=first.alice.engine.multistream_session(),
        ),
        endpoint(
            "bob",
            clock,
            first.bob.config,
            first.bob.cache,
            session=first.bob.engine.multistream_session(),
        ),
        clock,
    )
    start(video)
    video.run()
    a, b = video.secured()
    assert a.multistream and b.multistream
    assert a.sas == b.sas == a_secured.sas
    assert "DHPart1" not in [k for _, k in video.wire]
    va, vb = video.alice.engine.srtp, video.bob.engine.srtp
    assert va is not None and vb is not None
    assert va.send_key == vb.receive_key
    assert va.send_key != first.alice.engine.srtp.send_key  # type: ignore[union-attr]


def test_tampered_zrtp_hash_never_secure() -> None:
    p = pair(bind=False)
    p.alice.engine.set_peer_hello_hash("1.10 " + "00" * 32)
    p.bob.engine.set_peer_hello_hash(p.alice.engine.hello_hash)
    start(p)
    p.run()
    assert p.alice.engine.state is State.FAILED
    assert p.alice.engine.srtp is None
    (failure,) = [f for f in p.alice.engine.events]
    assert "a=zrtp-hash" in failure.reason  # type: ignore[union-attr]
    assert p.bob.engine.state is not State.SECURE


def resealed(packet: bytes, offset: int) -> bytes:
    """The packet with one message byte flipped and a valid CRC (an active attacker)."""
    raw = bytearray(packet[:-4])
    raw[offset] ^= 0x01
    return bytes(raw) + crc(bytes(raw))


def test_substituted_dhpart2_fails_hvi() -> None:
    """A MiTM swapping the initiator's public value is caught by the hvi of the Commit."""

    def attacker(src: str, packet: bytes) -> bytes | None:
        if kind(packet) == "DHPart2":
            return resealed(packet, 12 + 12 + 32 + 32 + 5)  # a byte of pvi
        return packet

    p = pair(only(b"X255"), EngineConfig(zid=os.urandom(12), initiate=False), bind=False)
    start(p)
    p.run(attacker)
    assert p.bob.engine.state is State.FAILED
    assert p.alice.engine.state is State.FAILED
    codes = {f.code for f in p.failures()}
    assert ErrorCode.HVI_MISMATCH in codes
    assert p.alice.engine.srtp is None and p.bob.engine.srtp is None


def test_tampered_commit_refused() -> None:
    def attacker(src: str, packet: bytes) -> bytes | None:
        if kind(packet) == "Commit":
            return resealed(packet, 12 + 12 + 32 + 12 + 20 + 3)  # a byte of hvi
        return packet

    p = pair(only(b"X255"), EngineConfig(zid=os.urandom(12), initiate=False))
    start(p)
    p.run(attacker)
    assert p.bob.engine.state is State.FAILED
    (failure,) = p.bob.engine.events
    assert isinstance(failure, Failed)
    assert "Commit MAC" in failure.reason
    assert p.alice.engine.srtp is None and p.bob.engine.srtp is None


def test_bad_confirm_mac_refused() -> None:
    def attacker(src: str, packet: bytes) -> bytes | None:
        if kind(packet) == "Confirm1":
            return resealed(packet, 12 + 12 + 8 + 16 + 5)  # inside the encrypted part
        return packet

    p = pair(only(b"EC25"), EngineConfig(zid=os.urandom(12), initiate=False))
    start(p)
    p.run(attacker)
    assert {f.code for f in p.failures()} == {ErrorCode.BAD_CONFIRM_MAC}
    assert p.alice.engine.srtp is None and p.bob.engine.srtp is None


def test_silent_peer_times_out() -> None:
    p = pair()
    p.alice.engine.start()  # Bob never starts: no Hello, no answer
    p.run(lambda src, packet: None)
    (failure,) = p.failures()
    assert failure.code is ErrorCode.PROTOCOL_TIMEOUT
    hellos = [k for who, k in p.wire if who == "alice"]
    assert hellos.count("Hello") == 21  # the first and 20 retransmissions (T1)


def test_peer_stops_mid_handshake() -> None:
    def cut_after_commit(src: str, packet: bytes) -> bytes | None:
        return None if src == "bob" and kind(packet) in ("DHPart1",) else packet

    p = pair(only(b"X255"), EngineConfig(zid=os.urandom(12), initiate=False))
    start(p)
    p.run(cut_after_commit)
    assert p.alice.engine.state is State.FAILED
    assert p.alice.engine.events == [
        Failed(ErrorCode.PROTOCOL_TIMEOUT, "no answer from the peer (commit-sent)", False)
    ]
    assert p.alice.engine.srtp is None
    assert [k for who, k in p.wire if who == "alice"].count("Commit") == 11  # 1 + 10 on T2


def test_peer_error_is_reported() -> None:
    def bob_gives_up(src: str, packet: bytes) -> bytes | None:
        if src == "bob" and kind(packet) == "DHPart1":
            return ZrtpPacket(7, 7, Error(ErrorCode.BAD_PUBLIC_VALUE).serialize()).serialize()
        return packet

    p = pair(only(b"X255"), EngineConfig(zid=os.urandom(12), initiate=False))
    start(p)
    p.run(bob_gives_up)
    (failure,) = p.alice.engine.events
    assert failure == Failed(ErrorCode.BAD_PUBLIC_VALUE, "peer: DH error: bad public value", True)
    assert ("alice", "ErrorACK") in p.wire


def test_equal_zids_refused() -> None:
    zid = os.urandom(12)
    p = pair(EngineConfig(zid=zid), EngineConfig(zid=zid))
    start(p)
    p.run()
    assert {f.code for f in p.failures()} >= {ErrorCode.EQUAL_ZIDS}


def test_garbage_counted_not_raised() -> None:
    p = pair()
    engine = p.alice.engine
    engine.start()
    for junk in (
        b"",
        b"\x10\x00" * 20,
        os.urandom(200),
        ZrtpPacket(1, 2, b"\x50\x5a\x00\x03Bogus   ").serialize(),
    ):
        engine.receive(junk)
    assert engine.dropped == 4
    assert engine.state is State.DISCOVERY


def test_secrets_not_in_repr() -> None:
    p = pair(only(b"X255"), only(b"X255"))
    start(p)
    p.run()
    keys = p.alice.engine.srtp
    assert keys is not None
    assert keys.send_key.hex() not in repr(keys)
    assert dataclasses.is_dataclass(keys)
