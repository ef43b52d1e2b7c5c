"""Issue 12, finding 13 and around it: what strangers' bytes can no longer do to the
sans-I/O parsers (digits, duplicates, framing, limits, option tags, sources)."""

from __future__ import annotations

from pathlib import Path

import pytest
from quietwire.protocols.sdp.session import ParseError as SdpParseError
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.extensions import refuse_unsupported
from quietwire.protocols.sip.framing import KeepAlive, StreamFramer
from quietwire.protocols.sip.headers import NameAddr
from quietwire.protocols.sip.message import Request, parse_message
from quietwire.protocols.sip.uri import SipUri
from quietwire.runtime.settings import SettingsError, load_settings
from quietwire.signaling.admission import ConnectionCaps, source_key
from quietwire.signaling.registrar import _int
from quietwire.signaling.settings import SignalingSettings

from tests.unit.test_sip import REGISTER

SUPERSCRIPT_TWO = "\u00b2"
ARABIC_SEVENTY = "\u0667\u0660"


def _register(old: bytes, new: str) -> bytes:
    assert old in REGISTER
    return REGISTER.replace(old, new.encode())


@pytest.mark.parametrize(
    "data",
    [
        _register(b"CSeq: 20 REGISTER", f"CSeq: {SUPERSCRIPT_TWO} REGISTER"),
        _register(b"CSeq: 20 REGISTER", f"CSeq: {ARABIC_SEVENTY} REGISTER"),
        _register(b"Max-Forwards: 70", f"Max-Forwards: {ARABIC_SEVENTY}"),
        _register(b"Max-Forwards: 70", f"Max-Forwards: {SUPERSCRIPT_TWO}"),
        _register(b"Content-Length: 0", f"Content-Length: {SUPERSCRIPT_TWO}"),
        _register(b"127.0.0.1:40022;alias", f"127.0.0.1:{ARABIC_SEVENTY};alias"),
        _register(b"127.0.0.1:40022;alias", f"127.0.0.1:{SUPERSCRIPT_TWO};alias"),
        _register(b"REGISTER sip:127.0.0.1 SIP", f"REGISTER sip:127.0.0.1:{ARABIC_SEVENTY} SIP"),
        _register(b"CSeq: 20 REGISTER", "CSeq: " + "9" * 5000 + " REGISTER"),
        _register(b"Content-Length: 0", "Content-Length: " + "0" * 5000),
        "SIP/2.0 2\u0660\u0660 OK".encode() + REGISTER[REGISTER.index(b"\r\n") :],
    ],
)
def test_digits_are_ascii(data: bytes) -> None:
    """``int()`` took a superscript two (ValueError) and Arabic-Indic digits (as 70)."""
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400


def test_framing_digits_are_ascii() -> None:
    for value in (SUPERSCRIPT_TWO, ARABIC_SEVENTY, "1" * 5000, "-1", "+1", " "):
        with pytest.raises(ParseError):
            StreamFramer().feed(_register(b"Content-Length: 0", f"Content-Length: {value}"))


def test_uri_port_digits() -> None:
    for text in (f"sip:a@b:{ARABIC_SEVENTY}", f"sip:a@b:{SUPERSCRIPT_TWO}", "sip:a@b:0"):
        with pytest.raises(ParseError):
            SipUri.parse(text)
    assert SipUri.parse("sip:a@b:65535").port == 65535


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("From", "<sip:forged@127.0.0.1>;tag=x"),
        ("f", "<sip:forged@127.0.0.1>;tag=x"),
        ("To", "sip:bob@127.0.0.1"),
        ("t", "sip:bob@127.0.0.1"),
        ("Call-ID", "other"),
        ("i", "other"),
        ("CSeq", "21 REGISTER"),
        ("Max-Forwards", "70"),
        ("Content-Length", "0"),
        ("l", "0"),
    ],
)
def test_single_value_headers_once(header: str, value: str) -> None:
    """RFC 4475 3.3.8: a second From (a forged one) must not reach the callee."""
    data = _register(b"Content-Length: 0\r\n", f"{header}: {value}\r\nContent-Length: 0\r\n")
    with pytest.raises(ParseError, match="more than one") as caught:
        parse_message(data)
    assert caught.value.status == 400


def test_comma_lists_do_not_sneak_a_second_value() -> None:
    for header, value in (("Call-ID", "a, b"), ("Call-ID", "a b"), ("CSeq", "1 X, 2 X")):
        with pytest.raises(ParseError):
            parse_message(_register(b"Content-Length: 0", f"{header}: {value}\r\nX: y"))


def test_bare_cr_in_the_header_block() -> None:
    with pytest.raises(ParseError, match="bare CR"):
        parse_message(_register(b"Call-ID: reg1", "Call-ID: reg1\rEvil: yes"))


def test_request_uri() -> None:
    with pytest.raises(ParseError) as unknown:
        parse_message(_register(b"REGISTER sip:127.0.0.1", "REGISTER tel:+15551234"))
    assert unknown.value.status == 416
    for uri in ("<sip:127.0.0.1>", "sip:127.0.0.1?Route=x", "sip:a@b@c"):
        with pytest.raises(ParseError) as caught:
            parse_message(_register(b"sip:127.0.0.1 SIP", f"{uri} SIP"))
        assert caught.value.status == 400


def test_user_part_holds_question_marks_and_semicolons() -> None:
    """RFC 3261 section 25.1 user-unreserved (RFC 4475 3.1.1.2): "?" split it before."""
    uri = SipUri.parse("sip:a?b;c=d/e,f@example.com;lr?h=v")
    assert (uri.user, uri.host, uri.params, uri.headers) == (
        "a?b;c=d/e,f",
        "example.com",
        {"lr": None},
        "h=v",
    )
    with pytest.raises(ParseError):
        SipUri.parse("sip:a b@example.com")


def test_addr_spec_with_a_question_mark_needs_brackets() -> None:
    with pytest.raises(ParseError):
        NameAddr.parse("sip:user@example.com?Route=%3Csip:x%3E")
    assert NameAddr.parse("<sip:user@example.com?Route=%3Csip:x%3E>").uri.headers


def test_two_content_lengths_break_the_stream() -> None:
    with pytest.raises(ParseError, match="more than one"):
        StreamFramer().feed(_register(b"Content-Length: 0", "Content-Length: 0\r\nl: 0"))


def _with_body(size: int, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return _register(b"Content-Length: 0\r\n", f"{extra}Content-Length: {size}\r\n") + b"x" * size


def test_preauth_body_limit() -> None:
    framer = StreamFramer(preauth_body_bytes=100)
    (message,) = framer.feed(_with_body(100))
    assert isinstance(message, Request)
    with pytest.raises(ParseError) as caught:
        StreamFramer(preauth_body_bytes=100).feed(_with_body(101)[:-50])
    assert caught.value.status == 413
    with pytest.raises(ParseError):  # anyone can write a credentials header
        StreamFramer(preauth_body_bytes=100).feed(
            _with_body(101, 'Authorization: Digest username="a"')
        )
    (message,) = StreamFramer(preauth_body_bytes=100, trusted=True).feed(_with_body(101))
    assert isinstance(message, Request)
    (message,) = StreamFramer().feed(_with_body(20_000))  # a phone's framer: no such limit
    assert isinstance(message, Request)


def test_messages_before_a_framing_error_are_kept() -> None:
    framer = StreamFramer()
    broken = _register(b"Content-Length: 0", "Content-Length: x")
    (good,) = framer.feed(REGISTER + broken)
    assert isinstance(good, Request)
    assert framer.error is not None and framer.pending().startswith(b"REGISTER")
    with pytest.raises(ParseError):
        framer.feed(REGISTER)


def test_a_ping_cut_across_reads_is_a_ping() -> None:
    whole = StreamFramer().feed(b"\r\n\r\n" + REGISTER)
    framer = StreamFramer()
    cut = framer.feed(b"\r\n\r") + framer.feed(b"\n" + REGISTER)
    assert [type(i) for i in cut] == [type(i) for i in whole] == [KeepAlive, Request]


def test_keepalive_bytes_are_not_a_partial_message() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n")
    assert framer.buffered == 0
    framer.feed(b"\r\nREG")
    assert framer.buffered == 3


def test_option_tags() -> None:
    bext = parse_message(
        _register(b"Content-Length: 0", "Proxy-Require: foo, Bar\r\nContent-Length: 0")
    )
    assert isinstance(bext, Request)
    answer = refuse_unsupported(bext, "Proxy-Require", frozenset({"bar"}))
    assert answer is not None and answer.status == 420
    assert answer.headers.get("Unsupported") == "foo"
    assert refuse_unsupported(bext, "Proxy-Require", frozenset({"foo", "bar"})) is None
    bext.method = "ACK"
    assert refuse_unsupported(bext, "Proxy-Require", frozenset()) is None


def test_sources() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert (
        source_key("2001:db8:1:2:3:4:5:6") == source_key("2001:db8:1:2::9") == ("2001:db8:1:2::/64")
    )
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    caps = ConnectionCaps(total=3, per_source=2)
    first = caps.admit("2001:db8::1")
    assert first is not None and caps.admit("2001:db8::2") == first
    assert caps.admit("2001:db8::3") is None  # the same /64
    assert caps.admit("192.0.2.1") is not None
    assert caps.admit("192.0.2.2") is None  # the total
    caps.release(first)
    assert caps.open == 2 and caps.admit("192.0.2.2") is not None


def test_registrar_numbers_are_ascii() -> None:
    assert _int(SUPERSCRIPT_TWO, 3600) == 3600
    assert _int(ARABIC_SEVENTY, 3600) == 3600
    assert _int("1" + "0" * 100, 3600) == 3600
    assert _int(" 60 ", 3600) == 60


def test_sdp_numbers_are_ascii() -> None:
    sdp = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio %s RTP/AVP 0\r\n"
    for port in (ARABIC_SEVENTY, SUPERSCRIPT_TWO, "70000", "1/" + SUPERSCRIPT_TWO):
        with pytest.raises(SdpParseError):
            SessionDescription.parse(sdp % port.encode())
    media = SessionDescription.parse(sdp % b"4000" + b"a=rtcp:\r\n").media[0]
    with pytest.raises(SdpParseError):
        media.rtcp_port  # noqa: B018 - IndexError before (found by fuzzing)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QW_SIP_MAX_CONNECTIONS", "0"),
        ("QW_SIP_MAX_CONNECTIONS_PER_SOURCE", "20000"),
        ("QW_SIP_PREAUTH_BODY_BYTES", "70000"),
        ("QW_SIP_MESSAGE_TIMEOUT", "0"),
    ],
)
def test_limit_settings_are_validated(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QW_GRPC_INSECURE", "true")
    for name in ("cert", "key"):
        (tmp_path / name).write_text("x")
        monkeypatch.setenv(f"QW_SIP_TLS_{name.upper()}", str(tmp_path / name))
    defaults = load_settings(SignalingSettings)
    assert (defaults.sip_max_connections, defaults.sip_max_connections_per_source) == (10_000, 64)
    assert (defaults.sip_preauth_body_bytes, defaults.sip_message_timeout) == (4096, 10.0)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError):
        load_settings(SignalingSettings)
