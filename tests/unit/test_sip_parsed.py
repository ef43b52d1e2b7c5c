"""Parsed header values are shared by text (a dialog's From, To, Contact and a
transaction's Vias come back in each of its messages), bounded, and a Via we
write is what its text parses to when a response brings it back."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr, Parsed, Via
from quietwire.protocols.sip.uri import MAX_CACHED_TEXT, SipUri


def test_the_same_text_is_parsed_once() -> None:
    text = '"Alice" <sip:alice@example.com>;tag=shared-1'
    first = NameAddr.parse(text)
    assert NameAddr.parse(text) is first and first.tag == "shared-1"
    assert NameAddr.parse(text, shared=False) is not first  # outside the cache
    via = "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKshared"
    assert Via.parse(via) is Via.parse(via)


def test_a_via_we_write_comes_back_as_written() -> None:
    ours = Via("TLS", "proxy.example", 5061, {"branch": "z9hG4bKours-1", "qwr": "r1"})
    text = ours.wire()
    assert text == str(ours)
    assert Via.parse(text) is ours
    assert Via.parse(f" {text}") == ours  # another text: parsed, equal


def test_a_text_that_does_not_parse_is_refused_each_time() -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            NameAddr.parse("<sip:alice@example.com")


def test_the_oldest_text_goes_past_the_size() -> None:
    parsed: Parsed[str] = Parsed(2)
    parsed.put("a", "A")
    parsed.put("b", "B")
    parsed.put("a", "A2")  # known: nothing goes
    assert (parsed.get("a"), parsed.get("b")) == ("A2", "B")
    parsed.put("c", "C")
    assert (parsed.get("a"), parsed.get("b"), parsed.get("c")) == (None, "B", "C")


def test_a_long_text_is_parsed_and_not_kept() -> None:
    """What a stranger can make the caches hold: ``size`` texts of at most
    MAX_CACHED_TEXT characters each."""
    user = "u" * MAX_CACHED_TEXT
    text = f"<sip:{user}@example.com>;tag=long"
    first = NameAddr.parse(text)
    assert first.uri.user == user and NameAddr.parse(text) is not first
    uri = f"sip:{user}@example.com"
    assert SipUri.parse(uri) is not SipUri.parse(uri)
    short = "sip:alice@example.com"
    assert SipUri.parse(short) is SipUri.parse(short)
    parsed: Parsed[str] = Parsed(4, longest=3)
    assert parsed.put("abcd", "v") == "v" and parsed.get("abcd") is None
