"""ZRTP key material: hash chain, MACs, hvi, KDF, s0 and every derived key.

Section numbers refer to RFC 6189. Classes holding key material have no
generated ``repr`` (:class:`SessionKeys`); MACs are compared with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from quietwire.protocols.zrtp.algorithms import CipherType, HashType
from quietwire.protocols.zrtp.messages import MAC_LENGTH

#: The hash chain, Hello hash and message MACs are always SHA-256 (section 9).
CHAIN_HASH = HashType.S256
#: Retained secrets, SAS hash and the like are 256 bits (section 4.5.3).
SECRET_BITS = 256
SRTP_SALT_BITS = 112


@dataclass(frozen=True, slots=True)
class HashChain:
    """H0..H3 (section 9): H0 random, each next one the SHA-256 of the previous."""

    h0: bytes
    h1: bytes
    h2: bytes
    h3: bytes

    @classmethod
    def from_h0(cls, h0: bytes) -> HashChain:
        h1 = hashlib.sha256(h0).digest()
        h2 = hashlib.sha256(h1).digest()
        return cls(h0, h1, h2, hashlib.sha256(h2).digest())

    @classmethod
    def generate(cls) -> HashChain:
        return cls.from_h0(os.urandom(32))


def next_image(image: bytes) -> bytes:
    """H(n+1) from H(n): what a revealed image must hash to."""
    return hashlib.sha256(image).digest()


def message_mac(key: bytes, data: bytes) -> bytes:
    """The MAC ending Hello, Commit and DHPart: HMAC-SHA-256 truncated to 64 bits."""
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LENGTH]


def mac_ok(key: bytes, data: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(message_mac(key, data), mac)


def zrtp_hash(hello_message: bytes) -> str:
    """The ``a=zrtp-hash`` value for a Hello message (section 8.1)."""
    return "1.10 " + hashlib.sha256(hello_message).hexdigest()


def hvi(hash_type: HashType, dhpart2_message: bytes, responder_hello: bytes) -> bytes:
    """``hash(initiator's DHPart2 || responder's Hello)``, 256 bits (section 4.4.1.1)."""
    return hash_type.digest(dhpart2_message + responder_hello)[:32]


def kdf(hash_type: HashType, ki: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    """``KDF(KI, Label, Context, L)`` (section 4.5.1): one HMAC round, truncated to L bits."""
    data = struct.pack("!I", 1) + label + b"\0" + context + struct.pack("!I", bits)
    return hmac.new(ki, data, hash_type.hashlib_name).digest()[: bits // 8]


def secret_id(hash_type: HashType, secret: bytes, role: bytes) -> bytes:
    """rs1IDi/rs1IDr and friends: ``MAC(secret, "Initiator"|"Responder")`` in 64 bits (4.3.1)."""
    return hmac.new(secret, role, hash_type.hashlib_name).digest()[:8]


def total_hash(hash_type: HashType, *messages: bytes) -> bytes:
    """DH mode: hash(responder Hello || Commit || DHPart1 || DHPart2) (section 4.4.1.4)."""
    return hash_type.digest(b"".join(messages))


def s0_dh_mode(
    hash_type: HashType,
    dh_result: bytes,
    zidi: bytes,
    zidr: bytes,
    total: bytes,
    s1: bytes | None,
    s2: bytes | None,
    s3: bytes | None,
) -> bytes:
    """s0 in DH mode (section 4.4.1.4): absent s1..s3 count as zero-length."""
    parts = [struct.pack("!I", 1), dh_result, b"ZRTP-HMAC-KDF", zidi, zidr, total]
    for secret in (s1, s2, s3):
        value = secret or b""
        parts += [struct.pack("!I", len(value)), value]
    return hash_type.digest(b"".join(parts))


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """Everything derived from s0 (section 4.5.3), for one side's point of view."""

    srtp_key_i: bytes
    srtp_salt_i: bytes
    srtp_key_r: bytes
    srtp_salt_r: bytes
    mac_key_i: bytes
    mac_key_r: bytes
    zrtp_key_i: bytes
    zrtp_key_r: bytes
    zrtp_session: bytes
    sas_hash: bytes
    new_rs1: bytes

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"

    @property
    def sas_value(self) -> int:
        """The leftmost 32 bits of the SAS hash (section 5.1.6)."""
        return int.from_bytes(self.sas_hash[:4], "big")


def derive(hash_type: HashType, cipher: CipherType, s0: bytes, context: bytes) -> SessionKeys:
    """All session keys from s0 and ``KDF_Context = ZIDi || ZIDr || total_hash``."""
    key_bits, hash_bits = cipher.key_length * 8, hash_type.length * 8

    def k(label: bytes, bits: int) -> bytes:
        return kdf(hash_type, s0, label, context, bits)

    return SessionKeys(
        srtp_key_i=k(b"Initiator SRTP master key", key_bits),
        srtp_salt_i=k(b"Initiator SRTP master salt", SRTP_SALT_BITS),
        srtp_key_r=k(b"Responder SRTP master key", key_bits),
        srtp_salt_r=k(b"Responder SRTP master salt", SRTP_SALT_BITS),
        mac_key_i=k(b"Initiator HMAC key", hash_bits),
        mac_key_r=k(b"Responder HMAC key", hash_bits),
        zrtp_key_i=k(b"Initiator ZRTP key", key_bits),
        zrtp_key_r=k(b"Responder ZRTP key", key_bits),
        zrtp_session=k(b"ZRTP Session Key", hash_bits),
        sas_hash=k(b"SAS", SECRET_BITS),
        new_rs1=k(b"retained secret", SECRET_BITS),
    )


def multistream_s0(hash_type: HashType, zrtp_session: bytes, context: bytes) -> bytes:
    """s0 in Multistream mode: ``KDF(ZRTPSess, "ZRTP MSK", KDF_Context, hash length)`` (4.4.3.2)."""
    return kdf(hash_type, zrtp_session, b"ZRTP MSK", context, hash_type.length * 8)


def confirm_mac(hash_type: HashType, mac_key: bytes, encrypted: bytes) -> bytes:
    """confirm_mac: the negotiated HMAC over the encrypted part, 64 bits (section 5.7)."""
    return hmac.new(mac_key, encrypted, hash_type.hashlib_name).digest()[:MAC_LENGTH]


def confirm_mac_ok(hash_type: HashType, mac_key: bytes, encrypted: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(confirm_mac(hash_type, mac_key, encrypted), mac)


def cfb_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES in 128-bit CFB mode, as Confirm and SASrelay use (section 5.7)."""
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def cfb_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()
