"""Parsed header values are shared by text (a dialog's From, To, Contact and a
transaction's Vias come back in each of its messages), bounded, and a Via we
write is what its text parses to when a response brings it back."""

from __future__ import annotations

import pytest
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.headers import NameAddr, Parsed, Via


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
