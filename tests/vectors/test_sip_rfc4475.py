"""The SIP parser against RFC 4475's torture messages: valid ones parse to the
right values and survive a round trip; invalid ones raise with the right status."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.message import Request, Response, parse_message

from tests.vectors.rfc4475 import INVALID, VALID, WSINV


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


@pytest.mark.parametrize("name", sorted(VALID))
def test_round_trip(name: str) -> None:
    first = parse_message(VALID[name])
    again = parse_message(first.serialize())
    assert type(again) is type(first)
    assert list(again.headers) == list(first.headers)
    assert again.body == first.body
    assert again.serialize() == first.serialize()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_rejected_with_status(name: str) -> None:
    data, status = INVALID[name]
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == status
