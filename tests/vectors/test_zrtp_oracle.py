"""Our ZRTP primitives against a second implementation: Debian's libbzrtp0 (the
ZRTP library inside Linphone), called through ctypes on random inputs.

Test-only (libbzrtp is GPL and never linked by quietwire). Skipped with the
reason when the library is absent; `make test` installs it on Debian.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import random

import pytest
from quietwire.protocols.zrtp import kdf
from quietwire.protocols.zrtp.algorithms import HashType
from quietwire.protocols.zrtp.packet import crc
from quietwire.protocols.zrtp.sas import render_b32, render_b256

ROUNDS = 300


def _load(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name)
    if path is None:
        pytest.skip(f"lib{name} not installed (Debian package libbzrtp0)", allow_module_level=True)
    return ctypes.CDLL(path)


bzrtp = _load("bzrtp")
bctoolbox = _load("bctoolbox")

bzrtp.bzrtp_CRC32.restype = ctypes.c_uint32
bzrtp.bzrtp_CRC32.argtypes = [ctypes.c_char_p, ctypes.c_uint16]
bzrtp.bzrtp_keyDerivationFunction.restype = ctypes.c_int
bzrtp.bzrtp_keyDerivationFunction.argtypes = [
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_uint,
    ctypes.c_void_p,
    ctypes.c_char_p,
]
for _name in ("bzrtp_base32", "bzrtp_base256"):
    getattr(bzrtp, _name).restype = None
    getattr(bzrtp, _name).argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_int]
# A raw function pointer: a CFUNCTYPE wrapper with c_char_p arguments gives wrong answers.
HMAC_SHA256 = ctypes.cast(bctoolbox.bctbx_hmacSha256, ctypes.c_void_p)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(6189)


def test_crc32c(rng: random.Random) -> None:
    for _ in range(ROUNDS):
        data = rng.randbytes(rng.randrange(1, 600))
        # bzrtp returns the CRC byte-swapped and writes it big-endian: the same wire bytes.
        assert bzrtp.bzrtp_CRC32(data, len(data)).to_bytes(4, "big") == crc(data)


def test_kdf(rng: random.Random) -> None:
    labels = [b"Initiator SRTP master key", b"Responder HMAC key", b"SAS", b"retained secret"]
    for _ in range(ROUNDS):
        key, context = rng.randbytes(32), rng.randbytes(rng.choice([56, 88]))
        label, length = rng.choice(labels), rng.choice([14, 16, 32])
        output = ctypes.create_string_buffer(length)
        status = bzrtp.bzrtp_keyDerivationFunction(
            key, len(key), label, len(label), context, len(context), length, HMAC_SHA256, output
        )
        assert status == 0
        assert kdf.kdf(HashType.S256, key, label, context, length * 8) == output.raw


@pytest.mark.parametrize(
    ("render", "name", "size"),
    [(render_b32, "bzrtp_base32", 5), (render_b256, "bzrtp_base256", 32)],
)
def test_sas_rendering(rng: random.Random, render: object, name: str, size: int) -> None:
    function = getattr(bzrtp, name)
    for _ in range(ROUNDS):
        value = rng.getrandbits(32)
        output = ctypes.create_string_buffer(size)
        function(value, output, size)
        # bzrtp joins the two PGP words with ':' where we print a space.
        assert render(value) == output.value.decode().replace(":", " ")  # type: ignore[operator]
