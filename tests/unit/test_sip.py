"""SIP building blocks: URIs, structured headers, the header list, stream framing."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.framing import KeepAlive, Malformed, StreamFramer
from quietwire.protocols.sip.headers import CSeq, NameAddr, Via, split_list
from quietwire.protocols.sip.message import Headers, Request, parse_message, reply
from quietwire.protocols.sip.uri import SipUri

from tests.vectors.rfc4475 import CPARAM01, WSINV

REGISTER = (
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:40022;alias;branch=z9hG4bK.x1;rport\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: sip:alice@127.0.0.1\r\n"
    b"Call-ID: reg1\r\n"
    b"CSeq: 20 REGISTER\r\n"
    b'Contact: <sip:alice@127.0.0.1:40022;transport=tls>;+sip.instance="<urn:uuid:1>";reg-id=1\r\n'
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("text", "host", "port", "user", "transport"),
    [
        ("sip:alice@example.org", "example.org", None, "alice", "udp"),
        ("sips:bob@[2001:db8::1]:5061", "[2001:db8::1]", 5061, "bob", "tls"),
        ("sip:127.0.0.1:5061;transport=TLS", "127.0.0.1", 5061, None, "tls"),
        ("SIP:alice:secret@Example.ORG;lr", "Example.ORG", None, "alice", "udp"),
    ],
)
def test_uris(text: str, host: str, port: int | None, user: str | None, transport: str) -> None:
    uri = SipUri.parse(text)
    assert (uri.host, uri.port, uri.user, uri.transport) == (host, port, user, transport)
    assert str(uri) == text


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("http://example.org", 416),
        ("sip:", 400),
        ("sip:a@exa mple.org", 400),
        ("sip:a@host:99999", 400),
        ("sip:a@[zz::1]", 400),
    ],
)
def test_bad_uris(text: str, status: int) -> None:
    with pytest.raises(ParseError) as caught:
        SipUri.parse(text)
    assert caught.value.status == status


def test_aor_ignores_port_params_and_host_case() -> None:
    assert SipUri.parse("sip:Alice@EXAMPLE.org:5061;transport=tls").aor == "sip:Alice@example.org"


def test_via_with_rport_and_alias() -> None:
    via = parse_message(REGISTER).vias[0]
    assert via == Via(
        "TLS", "127.0.0.1", 40022, {"alias": None, "branch": "z9hG4bK.x1", "rport": None}
    )
    received = via.with_params(received="127.0.0.1", rport="40022")
    assert str(received) == (
        "SIP/2.0/TLS 127.0.0.1:40022;alias;branch=z9hG4bK.x1;rport=40022;received=127.0.0.1"
    )
    assert Via.parse(str(received)) == received


def test_name_addr_round_trip_and_instance() -> None:
    (contact,) = parse_message(REGISTER).contacts
    assert contact.params["+sip.instance"] == "<urn:uuid:1>"
    assert NameAddr.parse(str(contact)) == contact
    named = NameAddr(SipUri.parse("sip:bob@example.org"), 'Bob "the" Builder', {"tag": "x"})
    assert NameAddr.parse(str(named)) == named


def test_cseq() -> None:
    assert CSeq.parse("0009   INVITE") == CSeq(9, "INVITE")
    for bad in ("INVITE", "9", "x INVITE", f"{2**31} INVITE"):
        with pytest.raises(ParseError):
            CSeq.parse(bad)


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x;p=1,2>, <sip:y>,,') == ['"a, b" <sip:x;p=1,2>', "<sip:y>"]


def test_the_top_via_is_replaced_where_it_stands() -> None:
    headers = Headers(
        [
            ("From", "<sip:a@x>"),
            ("Via", ""),
            ("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ]
    )
    assert headers.replace_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=1.2.3.4")
    assert list(headers)[2:] == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=1.2.3.4"),
        ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
        ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
    ]
    assert not Headers([("To", "<sip:a@x>")]).replace_first("Via", "SIP/2.0/UDP a")


def test_headers_list_operations() -> None:
    headers = Headers(
        [
            ("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ]
    )
    assert len(headers.get_all("VIA")) == 3
    assert headers.pop_first("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("Via") == [
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    headers.add("Via", "SIP/2.0/TLS proxy;branch=z9hG4bK0", first=True)
    assert Via.parse(headers.get_all("Via")[0]).host == "proxy"


def test_parsed_headers_are_reused_while_their_text_holds() -> None:
    request = parse_message(REGISTER)
    assert isinstance(request, Request)
    sender, cseq = request.from_, request.cseq
    request.replace_top_via(request.vias[0].with_params(received="10.0.0.9"))
    copied, answer = request.copy(), reply(request, 200, "OK", "t1")
    assert copied.from_ is answer.from_ is request.from_ is sender
    assert copied.cseq is answer.cseq is cseq
    assert answer.vias[0] is request.vias[0]
    assert answer.vias[0].params["received"] == "10.0.0.9"
    assert answer.to.tag == "t1"
    copied.headers.set("From", "<sip:bob@127.0.0.1>;tag=b2")
    copied.headers.add("Via", "SIP/2.0/TLS proxy;branch=z9hG4bK0", first=True)
    assert (copied.from_.uri.user, copied.from_.tag) == ("bob", "b2")
    assert [via.host for via in copied.vias] == ["proxy", "127.0.0.1"]
    assert request.from_ is sender
    assert len(request.vias) == 1


def test_set_replaces_every_value_where_the_first_stood() -> None:
    headers = Headers([("To", "a"), ("Route", "<sip:r1>"), ("From", "b"), ("route", "<sip:r2>")])
    headers.set("Route", "<sip:r3>")
    headers.set("Expires", "60")
    assert list(headers) == [("To", "a"), ("Route", "<sip:r3>"), ("From", "b"), ("Expires", "60")]
    headers.remove("to")
    assert list(headers) == [("Route", "<sip:r3>"), ("From", "b"), ("Expires", "60")]


def test_request_serializes_its_content_length() -> None:
    request = parse_message(CPARAM01)
    assert isinstance(request, Request)
    request.body = b"hello"
    assert b"l: 0" not in request.serialize()
    assert parse_message(request.serialize()).body == b"hello"


def test_cseq_method_must_match() -> None:
    with pytest.raises(ParseError, match="CSeq method"):
        parse_message(REGISTER.replace(b"20 REGISTER", b"20 INVITE"))


def test_framing_chunks_pipelining_and_pings() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + REGISTER + WSINV + REGISTER
    out: list[object] = []
    for i in range(0, len(stream), 7):
        out += framer.feed(stream[i : i + 7])
    assert isinstance(out[0], KeepAlive)
    assert [m.method for m in out[1:]] == ["REGISTER", "INVITE", "REGISTER"]  # type: ignore[attr-defined]
    assert len(out[2].body) == 150  # type: ignore[attr-defined]


def test_framing_limits() -> None:
    with pytest.raises(ParseError, match="headers too large"):
        StreamFramer(max_header_bytes=100).feed(b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * 200)
    with pytest.raises(ParseError, match="body too large"):
        StreamFramer(max_body_bytes=10).feed(REGISTER.replace(b"Length: 0", b"Length: 11"))
    with pytest.raises(ParseError, match="Content-Length required"):
        StreamFramer().feed(REGISTER.replace(b"Content-Length: 0\r\n", b""))


def test_framing_keeps_going_after_a_malformed_message() -> None:
    framer = StreamFramer()
    bad = REGISTER.replace(b"CSeq: 20 REGISTER", b"CSeq: twenty REGISTER")
    first, second = framer.feed(bad + REGISTER)
    assert isinstance(first, Malformed) and first.error.status == 400
    assert isinstance(second, Request)
