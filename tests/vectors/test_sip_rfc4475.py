"""The SIP parser against every RFC 4475 torture message: valid ones parse to the
right values and survive a round trip; invalid ones raise with the status the
RFC gives (a response that does not parse is dropped). What the running server
answers to each is checked in tests/security/test_sip_input.py."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.framing import Malformed, StreamFramer
from quietwire.protocols.sip.message import Request, Response, parse_message

from tests.vectors.rfc4475 import CASES, INVALID, VALID, WSINV


def test_wsinv_values() -> None:
    msg = parse_message(WSINV)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.request_uri.params == {"unknownparam": None}
    assert msg.to.uri.user == "vivekg"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.headers.get("max-forwards") == "0068"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    (contact,) = msg.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("Route") == (
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    )
    assert len(msg.body) == 150


def test_escapes() -> None:
    msg = parse_message(VALID["esc01"])
    assert isinstance(msg, Request)
    assert msg.request_uri.user_unescaped == "sips:user@example.com"
    assert msg.to.uri.user_unescaped == "user"
    assert msg.from_.uri.user_unescaped == "I have spaces"
    (contact,) = msg.contacts
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    assert msg.headers.get("Content-Type") == "application/sdp"


def test_addr_spec_params_belong_to_the_header() -> None:
    bare = parse_message(VALID["cparam01"]).contacts[0]
    bracketed = parse_message(VALID["cparam02"]).contacts[0]
    assert bare.params == {"unknownparam": None} and bare.uri.params == {}
    assert bracketed.params == {} and bracketed.uri.params == {"unknownparam": None}


def test_response_with_body() -> None:
    msg = parse_message(VALID["bcast"])
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (200, "OK")
    assert len(msg.vias) == 2 and len(msg.body) == 154


def test_every_message_of_the_rfc_is_covered() -> None:
    # RFC 4475 section 3: 13 valid and 19 invalid parser tests, 1 transaction,
    # 15 application-layer and 1 backward-compatibility message.
    sections = [case.section for case in CASES.values()]
    assert len(set(sections)) == len(sections) == 49
    assert sum(s.startswith("3.1.1.") for s in sections) == 13
    assert sum(s.startswith("3.1.2.") for s in sections) == 19


def test_legal_characters_in_the_user_part() -> None:
    msg = parse_message(VALID["intmeth"])
    assert isinstance(msg, Request)
    uri = msg.request_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.headers is None
    assert msg.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == "работающий"
    semi = parse_message(VALID["semiuri"])
    assert isinstance(semi, Request)
    assert semi.request_uri.user_unescaped == "user;par=u@example.net"
    assert semi.request_uri.host == "example.com"


def test_escapes_that_are_not_escapes() -> None:
    msg = parse_message(VALID["esc02"])
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R"  # not REGISTER: methods are not unescaped
    assert len(msg.contacts) == 2 and msg.headers.get("C%6Fntact") is not None
    assert msg.from_.display == "%Z%45"
    nulls = parse_message(VALID["escnull"])
    assert [c.uri.user_unescaped for c in nulls.contacts] == ["\x00", "\x00\x00"]


def test_trailing_octets_of_a_datagram_are_ignored() -> None:
    msg = parse_message(VALID["dblreq"])
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


#: Not framable on a stream: the connection is closed (RFC 4475 3.1.2.3, 3.3.9;
#: RFC 3261 section 18.3 requires Content-Length on streams).
STREAM_FRAMING_ERRORS = {"ncl", "mcl01", "inv2543"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_framing(name: str) -> None:
    """Over a stream each message frames alone; the valid ones come out whole,
    the invalid ones as Malformed (answered, connection kept) or a framing error."""
    case = CASES[name]
    framer = StreamFramer(trusted=True)
    if name in STREAM_FRAMING_ERRORS:
        with pytest.raises(ParseError):
            framer.feed(case.data)
        return
    items = framer.feed(case.data)
    if name == "clerr":  # the rest of the body may still come (RFC 4475 3.1.2.2)
        assert items == [] and framer.buffered == len(case.data)
        return
    first = items[0]
    if case.status is None:
        assert not isinstance(first, Malformed)
    else:
        assert isinstance(first, Malformed) and first.error.status == case.status


@pytest.mark.parametrize("name", sorted(VALID))
def test_round_trip(name: str) -> None:
    first = parse_message(VALID[name])
    again = parse_message(first.serialize())
    assert type(again) is type(first)
    # Content-Length is added when the message had none (inv2543).
    assert [h for h in again.headers if h[0] != "Content-Length"] == [
        h for h in first.headers if h[0] != "Content-Length"
    ]
    assert again.body == first.body
    assert again.serialize() == first.serialize()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_rejected_with_status(name: str) -> None:
    data, status = INVALID[name]
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == status
