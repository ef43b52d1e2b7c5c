"""The SIP parser's fast paths decide exactly as the general paths behind them.

Each fast path reads a common spelling with str methods and either gives what
the general path (the grammar's regex, the line-by-line or folding code) gives
for that text, or steps aside. Checked over every message of RFC 4475, the
Linphone captures and the benchmark's messages, variants of them (LF line ends,
folding, bare CR, compact and lower-case names, extra whitespace), and
generated text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from quietwire.protocols.sip import digest, framing, headers, message
from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.grammar import ascii_int, is_ascii_int
from quietwire.protocols.sip.headers import canonical_name, is_token, parse_params, unquote

from bench.sipparse import MESSAGES as BENCH_MESSAGES
from tests.vectors.rfc4475 import CASES

T = TypeVar("T")
LINPHONE = Path(__file__).parent.parent / "vectors" / "data" / "linphone"


def _messages() -> list[bytes]:
    found = [case.data for case in CASES.values()]
    found += [path.read_bytes() for path in sorted(LINPHONE.glob("*.sip"))]
    return found + list(BENCH_MESSAGES.values())


def _variants(data: bytes) -> Iterator[bytes]:
    """The message and spellings of it the general paths handle differently."""
    yield data
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    yield b"\n".join(lines) + b"\n\n" + body  # LF line ends
    yield b"\r\n".join(lines) + b"\r\n \r\n\r\n" + body  # a blank continuation
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(b":")
        if not colon:
            continue
        changed = [
            name.lower() + b":" + value,
            name + b" \t: " + value + b" ",
            b" " + lines[index],
            name + b":\r\n " + value.strip(),  # folded
            name + b":" + value + b"\rx",  # bare CR
            name + b":" + value + b"\nx",  # bare LF
        ]
        compact = {v: k for k, v in headers.COMPACT.items()}.get(canonical_name(name.decode()))
        if compact is not None:
            changed.append(compact.encode() + b":" + value)
        for line in changed:
            yield b"\r\n".join([*lines[:index], line, *lines[index + 1 :]]) + sep + body


VARIANTS = [variant for data in _messages() for variant in _variants(data)]


def _outcome(function: Callable[[T], object], argument: T) -> object:
    """What ``function(argument)`` gives, or the reason and status of its ParseError."""
    try:
        return function(argument)
    except ParseError as exc:
        return ("ParseError", exc.reason, exc.status)


def _heads() -> Iterator[str]:
    for data in VARIANTS:
        head, _ = message.split_head(data.lstrip(b"\r\n"))
        yield head.decode("utf-8", "replace")


def test_the_variants_reach_both_paths() -> None:
    plain = [head for head in _heads() if "\n" not in head.replace("\r\n", "")]
    assert 0 < len(plain) < len(VARIANTS)


def test_header_lines_as_folding_path() -> None:
    for head in set(_heads()):
        assert _outcome(message._header_lines, head) == _outcome(message._folded_lines, head)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["\r\n", "\r", "\n", " ", "\t", "a", "b:", "\r\n "]), max_size=12))
def test_generated_header_lines_as_folding_path(pieces: list[str]) -> None:
    head = "".join(pieces)
    assert _outcome(message._header_lines, head) == _outcome(message._folded_lines, head)


def _content_length_every_line(head: bytes) -> int:
    """The framer's rule as first written: every line after the start line looked at."""
    lengths: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and canonical_name(name.strip().decode("latin-1")) == "Content-Length":
            lengths.append(value.strip())
    if not lengths:
        raise ParseError("Content-Length required on stream transports")
    if len(lengths) > 1:
        raise ParseError("more than one Content-Length")
    return ascii_int(lengths[0].decode("latin-1"), "Content-Length")


def _assert_content_length_as_every_line(head: bytes) -> None:
    assert _outcome(framing._content_length, head) == _outcome(_content_length_every_line, head)


def test_content_length_as_every_line() -> None:
    for data in VARIANTS:
        _assert_content_length_as_every_line(data.split(b"\r\n\r\n")[0])


_LINE_PIECES = st.sampled_from(
    [
        "Content-Length",
        "content-LENGTH",
        "l",
        "L",
        "Contact",
        "Content-Type",
        "CSeq",
        "c",
        "Call-ID",
        " ",
        "\t",
        "\x0b",
        "\x0c",
        "\r",
        "\n",
        "\x1c",
        "\xa0",
        "\xe9",
        ":",
        "12",
        "007",
        "99999999999",
        "x",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_LINE_PIECES, max_size=6).map("".join), max_size=6))
def test_generated_content_length_as_every_line(lines: list[str]) -> None:
    head = "\r\n".join(["INVITE sip:a@b SIP/2.0", *lines]).encode("latin-1")
    _assert_content_length_as_every_line(head)


def _summary(outcome: object) -> object:
    """A parsed message as what a reader sees of it (Headers have no ``==``)."""
    if isinstance(outcome, message.Request | message.Response):
        return (outcome.serialize(), list(outcome.headers), outcome.body)
    return outcome


def _assert_plain_head_as_general_path(data: bytes) -> bool:
    """What the framer does with a block :func:`message.plain_head` splits is what
    it does with any block; False when the block is not one of those."""
    end = data.find(b"\r\n\r\n")
    lines = message.plain_head(data[:end]) if end >= 0 else None
    if lines is None:
        return False
    length = _outcome(framing._length_in, lines)
    assert length == _outcome(framing._content_length, data[:end])
    if isinstance(length, int):
        whole = data[: end + 4 + length]
        fast = _outcome(
            lambda rest: message.parse_lines(lines, rest, datagram=False), whole[end + 4 :]
        )
        general = _outcome(lambda whole: message.parse_message(whole, datagram=False), whole)
        assert _summary(fast) == _summary(general)
    return True


def test_plain_head_as_general_path() -> None:
    plain = [data for data in VARIANTS if _assert_plain_head_as_general_path(data)]
    assert 0 < len(plain) < len(VARIANTS)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(_LINE_PIECES, st.sampled_from(["\u212a", "\u0130", "\u017f"])), max_size=6
        ).map("".join),
        max_size=6,
    )
)
def test_generated_plain_head_as_general_path(lines: list[str]) -> None:
    head = "\r\n".join(["INVITE sip:a@b SIP/2.0", *lines]).encode()
    _assert_plain_head_as_general_path(head + b"\r\n\r\nbody")


def _credentials(messages: list[bytes]) -> Iterator[str]:
    for data in messages:
        for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if colon and canonical_name(name.strip().decode()).endswith("Authorization"):
                yield value.strip().decode("utf-8", "replace")


def _assert_digest_items_as_grammar(rest: str) -> None:
    """As _digest_params reads: the plain reader only for plain text."""
    plain = digest._plain_items(rest) if digest._plain(rest) else None
    if plain is not None:
        assert plain == digest._grammar_items(rest)


def _rest(value: str) -> str:
    return value.partition(" ")[2].strip(" \t")


def test_plain_digest_items_as_grammar() -> None:
    plain = [_rest(value) for value in _credentials(_messages())]
    assert plain
    assert all(digest._plain_items(rest) is not None for rest in plain)
    for value in _credentials(VARIANTS):
        _assert_digest_items_as_grammar(_rest(value))


_DIGEST_PIECES = st.sampled_from(
    ["username", "nc", "=", '"', ",", " ", "\t", "a", "b-c", "sip:a@b", "\\", "x=y", "é", "\x7f"]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_DIGEST_PIECES, max_size=14).map("".join))
@example('username="a\\"')  # a quoted-pair: the plain reader would end the string there
def test_generated_digest_items_as_grammar(rest: str) -> None:
    _assert_digest_items_as_grammar(rest.rstrip(" \t"))


def _vias() -> Iterator[str]:
    for data in VARIANTS:
        head, _ = message.split_head(data)
        for line in head.decode("utf-8", "replace").splitlines():
            name, colon, value = line.partition(":")
            if colon and canonical_name(name.strip()) == "Via":
                yield from headers.split_list(value)


_VIA_SPELLINGS = [
    "SIP/2.0/TLS host",
    "SIP/2.0/TLS  host",
    "SIP/2.0/tls host",
    "SIP/2.0/TLS\thost",
    "SIP/2.0/TLS \u00a0host",
    "SIP / 2.0 / TLS host",
    "SIP/2.0/TLS",
    "SIP/2.0/TLS ",
    "SIP/2.0/XYZ host",
    "SIP/2.0/DTLS-SCTP host:5061;branch=z9hG4bK1",
    "SIP/2.0/TLS host\n;x",
    "SIP/2.1/TLS host",
]


def test_plain_sent_protocol_as_grammar() -> None:
    values = [value.strip() for value in [*_vias(), *_VIA_SPELLINGS]]
    assert any(headers._plain_sent_protocol(value) is not None for value in values)
    for value in values:
        plain = headers._plain_sent_protocol(value)
        if plain is not None:
            assert plain == headers._sent_protocol(value), value


def _start_lines() -> Iterator[str]:
    for data in VARIANTS:
        line = data.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
        yield line.decode("utf-8", "replace")


_REQUEST_LINES = [
    "INVITE sip:a@b SIP/2.0",
    "INVITE sip:a@b SIP/2.0\n",
    "INVITE  sip:a@b SIP/2.0",
    "INVITE sip:a@b  SIP/2.0",
    "INVITE sip:a\t@b SIP/2.0",
    "INVITE sip:a@b SIP/2.00",
    "INVITE sip:a@b SIP/7.0",
    "INV@TE sip:a@b SIP/2.0",
    "INVITE sip:é@b SIP/2.0",
    "INVITE sip:\x85@b SIP/2.0",
    " sip:a@b SIP/2.0",
    "INVITE  SIP/2.0",
]


def test_plain_request_line_as_grammar() -> None:
    lines = [*_start_lines(), *_REQUEST_LINES]
    assert any(message._plain_request_line(line) is not None for line in lines)
    for line in lines:
        plain = message._plain_request_line(line)
        if plain is not None:
            assert plain == message._request_line(line), line


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_LHEX = re.compile(r"[0-9a-f]+")
_HOSTISH = re.compile(r"[\[\]0-9A-Za-z.:-]+")
_CHARACTERS = [chr(code) for code in range(0x3100)] + ["\U0001d7d8", "\U0001f600"]


@pytest.mark.parametrize(
    ("predicate", "grammar"),
    [
        (is_token, _TOKEN),
        (is_ascii_int, _DIGITS),
        (digest._is_lhex, _LHEX),
        (headers._looks_like_host, _HOSTISH),
    ],
)
def test_character_class_predicates_as_regexes(
    predicate: Callable[[str], bool], grammar: re.Pattern[str]
) -> None:
    for text in ["", *_CHARACTERS, *(f"a{c}" for c in _CHARACTERS), "0" * 10, "0" * 11]:
        assert predicate(text) == bool(grammar.fullmatch(text)), repr(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09-._~!é² \t\n;=\"'"), max_size=12))
def test_generated_character_class_predicates_as_regexes(text: str) -> None:
    assert is_token(text) == bool(_TOKEN.fullmatch(text))
    assert is_ascii_int(text) == bool(_DIGITS.fullmatch(text))
    assert digest._is_lhex(text) == bool(_LHEX.fullmatch(text))


def _params_as_first_written(text: str) -> dict[str, str | None]:
    """parse_params as first written: each part stripped, then split at "="."""
    params: dict[str, str | None] = {}
    for part in headers._split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not _TOKEN.fullmatch(name):
            raise ParseError("bad header parameter")
        if eq and value.startswith('"'):
            value = unquote(value)
        elif eq and not value:
            raise ParseError("empty header parameter value")
        params[name.lower()] = value if eq else None
    return params


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["tag", "lr", "=", ";", " ", '"', "\\", "x y", "é", "\t"])))
def test_parse_params_as_first_written(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert _outcome(parse_params, text) == _outcome(_params_as_first_written, text)
