"""The digest module's fast paths give what the plain code they replaced gave.

:func:`nonce_text` and :func:`nonce_bytes` call ``binascii`` directly; a
nonce a replica of the earlier code minted, or refused, must fare the same.
A challenge is written in one f-string, and HA2 is remembered.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from quietwire.protocols.sip import digest
from quietwire.protocols.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
)
from quietwire.protocols.sip.nonces import NonceCheck, NonceMint, nonce_bytes, nonce_text


def _urlsafe_decoded(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return None


@given(st.binary(max_size=40))
def test_nonce_text_as_urlsafe_b64encode(raw: bytes) -> None:
    assert nonce_text(raw) == base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert nonce_bytes(nonce_text(raw)) == raw


_NONCE_PIECES = st.sampled_from(
    ["A", "z", "0", "-", "_", "+", "/", "=", "==", " ", "!", ".", "\n", "é", "\x00", "AAAA"]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_NONCE_PIECES, max_size=45).map("".join))
def test_nonce_bytes_as_urlsafe_b64decode(text: str) -> None:
    assert nonce_bytes(text) == _urlsafe_decoded(text)


@given(st.integers(min_value=0, max_value=42), st.sampled_from("!.=+/ é"))
def test_a_minted_nonce_with_a_character_added(where: int, extra: str) -> None:
    """base64 decoding skips characters outside the alphabet: such a nonce still
    reads as the one minted, as it did (its text, hashed into the response and
    naming its count, is what differs)."""
    mint = NonceMint(b"k" * 32)
    nonce = mint.mint(1000.0, DigestAlgorithm.MD5)
    changed = nonce[:where] + extra + nonce[where:]
    same = _urlsafe_decoded(changed) == _urlsafe_decoded(nonce)
    assert (mint.check(changed, 1000.0, DigestAlgorithm.MD5) is NonceCheck.FRESH) == same


def _challenge_as_first_written(c: Challenge) -> str:
    parts = [f'realm="{c.realm}"', f'nonce="{c.nonce}"']
    if c.opaque is not None:
        parts.append(f'opaque="{c.opaque}"')
    parts += [f"algorithm={c.algorithm.value}", f'qop="{c.qop}"']
    if c.stale:
        parts.append("stale=TRUE")
    return "Digest " + ", ".join(parts)


@given(
    st.builds(
        Challenge,
        st.text(max_size=8),
        st.text(max_size=8),
        st.sampled_from(DigestAlgorithm),
        st.none() | st.text(max_size=8),
        st.booleans(),
        st.sampled_from(["auth", "auth-int"]),
    )
)
def test_challenge_as_first_written(challenge: Challenge) -> None:
    assert str(challenge) == _challenge_as_first_written(challenge)


@given(
    st.sampled_from(DigestAlgorithm),
    st.lists(
        st.tuples(st.sampled_from(["REGISTER", "INVITE"]), st.sampled_from(["sip:a", "sip:b"]))
    ),
)
def test_expected_response_with_ha2_remembered(
    algorithm: DigestAlgorithm, requests: list[tuple[str, str]]
) -> None:
    """RFC 7616 section 3.4.1, written out, for requests that repeat a method and uri."""
    for method, uri in requests:
        c = Credentials("u", "r", "n", uri, "", algorithm, "auth", "c", "00000001")
        ha2 = algorithm.hash(f"{method}:{uri}")
        expected = algorithm.hash(f"ha1:n:00000001:c:auth:{ha2}")
        assert c.expected_response("ha1", method) == expected


_CHARACTERS = [chr(code) for code in range(0x3100)] + ["\U0001d7d8", "\U0001f600", "\u2028"]


def test_plain_as_isprintable_without_backslash() -> None:
    for c in _CHARACTERS:
        for text in (c, f"a{c}b", f"é{c}"):
            assert digest._plain(text) == (text.isprintable() and "\\" not in text), repr(text)


def test_challenge_init_as_declared() -> None:
    """Challenge's __init__ is written out (the generated one runs interpreted)."""
    declared = dataclasses.fields(Challenge)
    given_all = Challenge("r", "n", DigestAlgorithm.SHA_256, "o", True, "auth-int")
    assert [getattr(given_all, f.name) for f in declared] == [
        "r",
        "n",
        DigestAlgorithm.SHA_256,
        "o",
        True,
        "auth-int",
    ]
    defaults = Challenge("r", "n")
    assert [getattr(defaults, f.name) for f in declared[2:]] == [f.default for f in declared[2:]]
    assert dataclasses.replace(given_all, stale=False) == Challenge(
        "r", "n", DigestAlgorithm.SHA_256, "o", False, "auth-int"
    )
