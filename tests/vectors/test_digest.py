"""HA1 against the published digest examples (RFC 2617 section 3.5, RFC 7616 section 3.9.1)."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
    client_credentials,
    format_credentials,
    ha1,
    parse_challenge,
)
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.nonces import NonceCheck, NonceMint

# RFC 7616 section 3.9.1: the same request answered with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "qop": "auth",
    "method": "GET",
    "uri": "/dir/index.html",
}


def test_rfc2617_ha1() -> None:
    assert (
        ha1(DigestAlgorithm.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
        == "939e7578ed9e3c518a452acee763bce9"
    )


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        (DigestAlgorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            DigestAlgorithm.SHA_256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_rfc7616_response_from_stored_ha1(algorithm: DigestAlgorithm, response: str) -> None:
    """The HA1 we store is enough to reproduce the RFC's response."""
    v = RFC7616
    stored = ha1(algorithm, v["username"], v["realm"], v["password"])
    ha2 = algorithm.hash(f"{v['method']}:{v['uri']}")
    computed = algorithm.hash(f"{stored}:{v['nonce']}:{v['nc']}:{v['cnonce']}:{v['qop']}:{ha2}")
    assert computed == response


RFC7616_AUTHORIZATION = (
    'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",'
    ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,'
    ' cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,'
    ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def test_rfc7616_header_verifies_against_stored_ha1() -> None:
    credentials = Credentials.parse(RFC7616_AUTHORIZATION)
    assert credentials.algorithm is DigestAlgorithm.SHA_256
    assert credentials.nonce_count == 1
    stored = ha1(DigestAlgorithm.SHA_256, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert credentials.matches(stored, "GET")
    assert not credentials.matches(stored, "POST")
    wrong = ha1(DigestAlgorithm.SHA_256, "Mufasa", "http-auth@example.org", "Circle of life")
    assert not credentials.matches(wrong, "GET")


def test_rfc2069_style_without_qop() -> None:
    """Linphone answers MD5 without qop when none is offered."""
    stored = ha1(DigestAlgorithm.MD5, "alice", "127.0.0.1", "secret-pass")
    ha2 = DigestAlgorithm.MD5.hash("REGISTER:sip:127.0.0.1")
    response = DigestAlgorithm.MD5.hash(f"{stored}:abc:{ha2}")
    header = (
        f'Digest username="alice", realm="127.0.0.1", nonce="abc", uri="sip:127.0.0.1", '
        f'response="{response}"'
    )
    assert Credentials.parse(header).matches(stored, "REGISTER")


def test_client_and_server_agree_through_the_headers() -> None:
    mint = NonceMint(b"k" * 32)
    challenge = parse_challenge(
        str(
            Challenge(
                "example.org",
                mint.mint(1000.0, DigestAlgorithm.SHA_256),
                DigestAlgorithm.SHA_256,
                opaque="o1",
            )
        )
    )
    answer = client_credentials(
        challenge, "bob", "hunter2hunter2", "INVITE", "sip:x@example.org", 3, "cn0nce"
    )
    parsed = Credentials.parse(format_credentials(answer))
    assert parsed == answer
    assert parsed.matches(
        ha1(DigestAlgorithm.SHA_256, "bob", "example.org", "hunter2hunter2"), "INVITE"
    )
    assert mint.check(parsed.nonce, 1010.0, DigestAlgorithm.SHA_256) is NonceCheck.FRESH


def test_nonces_expire_and_cannot_be_forged() -> None:
    mint = NonceMint(b"k" * 32, lifetime=60)
    md5 = DigestAlgorithm.MD5
    nonce = mint.mint(1000.0, md5)
    assert mint.check(nonce, 1059.0, md5) is NonceCheck.FRESH
    assert mint.check(nonce, 1061.0, md5) is NonceCheck.STALE
    assert NonceMint(b"x" * 32).check(nonce, 1000.0, md5) is NonceCheck.FORGED
    assert mint.check("not-a-nonce!", 1000.0, md5) is NonceCheck.FORGED
    assert mint.check(nonce[:-2] + "AA", 1000.0, md5) is NonceCheck.FORGED


def test_nonce_bound_to_its_algorithm() -> None:
    """A nonce from the SHA-256 challenge answered with MD5 is a downgrade (RFC 8760 section 3)."""
    mint = NonceMint(b"k" * 32)
    nonce = mint.mint(1000.0, DigestAlgorithm.SHA_256)
    assert mint.check(nonce, 1000.0, DigestAlgorithm.SHA_256) is NonceCheck.FRESH
    assert mint.check(nonce, 1000.0, DigestAlgorithm.MD5) is NonceCheck.OTHER_ALGORITHM


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcg==",
        'Digest username="a"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-512',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
    ],
)
def test_bad_credentials(header: str) -> None:
    with pytest.raises(ParseError):
        Credentials.parse(header)


def test_a_nonce_of_the_earlier_layout_is_challenged_again() -> None:
    """Before nonces carried their algorithm: time(8) random(8) HMAC(body)[:12]. Such a
    nonce (a replica not yet upgraded) must read as not ours (a fresh challenge), not
    as a downgrade (403)."""
    import base64
    import hashlib
    import hmac
    import struct

    secret = b"k" * 32
    body = struct.pack("!Q", 1_000_000) + bytes(range(8))
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:12]
    nonce = base64.urlsafe_b64encode(body + mac).decode().rstrip("=")
    for algorithm in DigestAlgorithm:
        assert NonceMint(secret).check(nonce, 1000.0, algorithm) is NonceCheck.FORGED
