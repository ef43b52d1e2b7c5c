"""The digest credential grammar (RFC 3261 section 25.1, RFC 7616, RFC 8760): what a
stranger may put in Authorization / Proxy-Authorization, and what is refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from quietwire.protocols.sip.digest import (
    MAX_CREDENTIALS,
    MAX_PARAMS,
    MAX_VALUE,
    Credentials,
    DigestAlgorithm,
    parse_challenge,
    same_resource,
)
from quietwire.protocols.sip.errors import ParseError

MD5_RESPONSE = "0" * 32
SHA_RESPONSE = "a" * 64


def header(**params: str) -> str:
    """A credential from ``params`` written as they are (quote them yourself)."""
    values = {
        "username": '"alice"',
        "realm": '"example.org"',
        "nonce": '"bm9uY2U"',
        "uri": '"sip:example.org"',
        "response": f'"{MD5_RESPONSE}"',
        "qop": "auth",
        "nc": "00000001",
        "cnonce": '"c0ffee"',
    }
    values.update(params)
    return "Digest " + ", ".join(f"{k}={v}" for k, v in values.items() if v != "-")


def test_a_phone_credential_parses() -> None:
    credentials = Credentials.parse(header())
    assert credentials.username == "alice" and credentials.nonce_count == 1
    assert credentials.algorithm is DigestAlgorithm.MD5


@pytest.mark.parametrize(
    "value",
    [
        header(qop='"auth"', nc='"00000002"'),  # tokens quoted: RFC 7235 section 2.1
        header(algorithm="sha-256", response=f'"{SHA_RESPONSE}"'),
        header(username='"a\\"b"'),  # a quoted-pair
        header(opaque='"x"', extension="token-value"),  # auth-param extension
        header(qop="-", nc="-", cnonce="-"),  # RFC 2069 style, no qop
        'Digest\tusername = "alice" ,realm="example.org",nonce="n",uri="sip:e",'
        f' response="{MD5_RESPONSE}"',
    ],
)
def test_accepted_forms(value: str) -> None:
    Credentials.parse(value)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        # nc: exactly 8 LHEX, not zero (finding 3: 4000 hex digits reached Redis)
        (header(nc="f" * 4000), 400),
        (header(nc="0000001"), 400),
        (header(nc="000000001"), 400),
        (header(nc="0000000A"), 400),
        (header(nc="00000000"), 400),
        (header(nc='"0000001g"'), 400),
        (header(nc="-0000001"), 400),
        # each parameter once
        (header() + ', username="mallory"', 400),
        (header() + ", NC=00000002", 400),
        # forms: these are quoted strings
        (header(username="alice"), 400),
        (header(uri="sip:example.org"), 400),
        (header(response=MD5_RESPONSE), 400),
        (header(cnonce="c0ffee"), 400),
        # response: LHEX of the algorithm's length
        (header(response=f'"{SHA_RESPONSE}"'), 400),
        (header(algorithm="SHA-256", response=f'"{MD5_RESPONSE}"'), 400),
        (header(response=f'"{"A" * 32}"'), 400),
        (header(response='"zz"'), 400),
        # qop, cnonce, nc go together
        (header(qop="-"), 400),
        (header(nc="-"), 400),
        (header(cnonce="-"), 400),
        (header(cnonce='""'), 400),
        # what we never offer: 403
        (header(qop="auth-int"), 403),
        (header(algorithm="MD5-sess"), 403),
        (header(algorithm="SHA-512-256", response=f'"{SHA_RESPONSE}"'), 403),
        (header(userhash="true"), 403),
        (header(username="-") + ", username*=UTF-8''alice", 403),
        # required parameters, non-empty
        (header(username="-"), 400),
        (header(nonce="-"), 400),
        (header(username='""'), 400),
        # list syntax
        (header() + ",", 400),
        (header().replace(", realm", ",, realm"), 400),
        (header() + ' x="unterminated', 400),
        (header(username='"alice"garbage'), 400),
        (header(username='"al\x01ice"'), 400),
        (header(username='"al\\\x01ice"'), 400),
        (header(username='"al\r\nice"'), 400),
        ("Basic YWxpY2U6c2VjcmV0", 400),
        ("Digest", 400),
        ('Digestusername="alice"', 400),
        # bounds
        (header(username=f'"{"a" * (MAX_VALUE + 1)}"'), 400),
        (header(cnonce=f'"{"c" * (MAX_VALUE + 1)}"'), 400),
        (header(opaque=f'"{"o" * (MAX_VALUE + 1)}"'), 400),
        (header(uri=f'"sip:{"u" * 1100}@example.org"'), 400),
        (header(**{f"x{i}": "y" for i in range(MAX_PARAMS)}), 400),
        (header(opaque=f'"{"o" * MAX_CREDENTIALS}"'), 400),
    ],
)
def test_refused(value: str, status: int) -> None:
    with pytest.raises(ParseError) as refused:
        Credentials.parse(value)
    assert refused.value.status == status


def test_challenge_parsed_with_the_same_grammar() -> None:
    challenge = parse_challenge(
        'Digest realm="example.org", nonce="abc", algorithm=SHA-256, qop="auth", stale=TRUE'
    )
    assert challenge.algorithm is DigestAlgorithm.SHA_256 and challenge.stale
    with pytest.raises(ParseError):
        parse_challenge('Digest realm="a", realm="b", nonce="n"')


@pytest.mark.parametrize(
    ("digest_uri", "request_uri", "same"),
    [
        ("sip:bob@example.org", "sip:bob@example.org", True),
        ("sip:bob@EXAMPLE.org", "sip:bob@example.org", True),
        ("sip:%62ob@example.org", "sip:bob@example.org", True),
        ("sip:bob@example.org;foo=1", "sip:bob@example.org", True),
        ("sip:bob@example.org;transport=TLS", "sip:bob@example.org;transport=tls", True),
        ("sip:carol@example.org", "sip:bob@example.org", False),
        ("sip:Bob@example.org", "sip:bob@example.org", False),
        ("sip:bob@example.org:5060", "sip:bob@example.org", False),
        ("sip:bob@example.org;transport=tls", "sip:bob@example.org", False),
        ("sip:bob@example.org;foo=1", "sip:bob@example.org;foo=2", False),
        ("sips:bob@example.org", "sip:bob@example.org", False),
        ("sip:bob@example.org", "sip:bob@example.org;gr=urn:uuid:1", True),
        ("/dir/index.html", "sip:bob@example.org", False),
        ("", "sip:bob@example.org", False),
    ],
)
def test_digest_uri_names_the_request_uri(digest_uri: str, request_uri: str, same: bool) -> None:
    """RFC 7616 section 3.4.6 with RFC 3261 section 19.1.4's URI equality."""
    assert same_resource(digest_uri, request_uri) is same


NAMES = st.sampled_from(
    ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm", "x"]
)
VALUES = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF", max_size=70),
    st.sampled_from(["auth", "MD5", "SHA-256", "auth-int", "00000001", '"', "\\", ","]),
    st.text(max_size=40),
)


@given(st.lists(st.tuples(NAMES, VALUES, st.booleans()), max_size=12))
def test_any_credential_parses_within_bounds_or_is_refused(
    params: list[tuple[str, str, bool]],
) -> None:
    """Whatever the parameters, ParseError or a credential that holds the grammar."""
    value = "Digest " + ", ".join(
        f'{name}="{text}"' if quoted else f"{name}={text}" for name, text, quoted in params
    )
    try:
        credentials = Credentials.parse(value)
    except ParseError:
        return
    assert len(credentials.response) == credentials.algorithm.hex_length
    assert credentials.nc is None or (len(credentials.nc) == 8 and credentials.nonce_count)
    for v in (credentials.username, credentials.realm, credentials.nonce):
        assert len(v) <= MAX_VALUE
        assert not [c for c in v if (ord(c) < 32 and c != "\t") or ord(c) == 127]


@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused(text: str) -> None:
    for value in (text, "Digest " + text):
        with contextlib.suppress(ParseError):
            Credentials.parse(value)
