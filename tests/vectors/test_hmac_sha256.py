"""HMAC-SHA-256 test vectors of RFC 4231 section 4 (test case 5, truncated, left out)."""

from __future__ import annotations

import pytest
from quietwire.protocols.hmac_sha256 import HmacSha256

CASES = {
    "4.2": (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    "4.3": (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    "4.4": (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    "4.5": (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    "4.7": (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    "4.8": (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size"
        b" data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
}


@pytest.mark.parametrize("section", sorted(CASES))
def test_rfc4231(section: str) -> None:
    key, data, mac = CASES[section]
    assert HmacSha256(key).digest(data).hex() == mac


@pytest.mark.parametrize("section", sorted(CASES))
def test_rfc4231_split_at_the_prefix(section: str) -> None:
    """The prefix is the message's start, wherever it is cut."""
    key, data, mac = CASES[section]
    for cut in (0, 1, len(data) // 2, len(data)):
        assert HmacSha256(key, data[:cut]).digest(data[cut:]).hex() == mac
