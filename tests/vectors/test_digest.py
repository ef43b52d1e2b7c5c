"""HA1 against the published digest examples (RFC 2617 section 3.5, RFC 7616 section 3.9.1)."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.digest import DigestAlgorithm, ha1

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
