"""JSON logs: one object per line, call id from context, IP addresses masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from quietwire.runtime.context import CallId, call_id_var
from quietwire.runtime.logs import configure_logging, mask_ips


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("test", "debug", stream=stream)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_with_call_id_and_extras(captured: io.StringIO) -> None:
    token = call_id_var.set(CallId("a84b4c76e66710"))
    try:
        logging.getLogger("quietwire.x").info("hello %s", "world", extra={"leg": 2})
    finally:
        call_id_var.reset(token)
    logging.getLogger("quietwire.x").warning("after")
    first, second = lines(captured)
    assert first["msg"] == "hello world"
    assert first["level"] == "info"
    assert first["service"] == "test"
    assert first["call_id"] == "a84b4c76e66710"
    assert first["leg"] == 2
    assert "call_id" not in second


def test_addresses_masked_everywhere(captured: io.StringIO) -> None:
    logging.getLogger("q").info(
        "REGISTER from 192.0.2.7:5061 via [2001:db8::1]:5061",
        extra={"peer": {"addr": "198.51.100.9", "all": ["::ffff:192.0.2.1"]}},
    )
    (entry,) = lines(captured)
    text = json.dumps(entry)
    for address in ("192.0.2.7", "2001:db8::1", "198.51.100.9", "192.0.2.1"):
        assert address not in text
    assert entry["msg"] == "REGISTER from <ip>:5061 via [<ip>]:5061"


def test_shown_when_operator_asks() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:]
    configure_logging("test", "info", show_ips=True, stream=stream)
    try:
        logging.getLogger("q").info("from 192.0.2.7")
    finally:
        root.handlers[:] = saved
    assert "192.0.2.7" in stream.getvalue()


@pytest.mark.parametrize(
    "text",
    [
        "at 12:30:45.120",
        "version 1.2.3.4.5",
        "sha 3a:4b",
        "Call-ID: a84b4c76e66710@pc33",
        "uptime 999.1.1.1 not an address",
    ],
)
def test_things_that_are_not_addresses_survive(text: str) -> None:
    assert mask_ips(text) == text
