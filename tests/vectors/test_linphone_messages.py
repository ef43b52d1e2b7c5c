"""Real Linphone 5.1 messages (captured over TLS): parse, round trip, and the facts
the platform relies on (GRUU instance, RTP/AVP with a=zrtp-hash, MD5 with qop)."""

from __future__ import annotations

from pathlib import Path

import pytest
from quietwire.protocols.sdp.session import SessionDescription
from quietwire.protocols.sip.digest import Credentials, DigestAlgorithm, ha1
from quietwire.protocols.sip.message import Request, parse_message

DATA = Path(__file__).parent / "data" / "linphone"
MESSAGES = sorted(p.name for p in DATA.glob("*.sip"))


def load(name: str) -> Request:
    message = parse_message((DATA / name).read_bytes())
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize("name", MESSAGES)
def test_round_trip(name: str) -> None:
    raw = (DATA / name).read_bytes()
    message = parse_message(raw)
    assert message.serialize() == parse_message(message.serialize()).serialize()
    assert list(parse_message(message.serialize()).headers) == list(message.headers)
    assert message.body == raw.split(b"\r\n\r\n", 1)[1]


def test_register_carries_instance_and_outbound() -> None:
    register = load("register.sip")
    (contact,) = register.contacts
    assert contact.params["+sip.instance"].startswith("<urn:uuid:")
    assert "outbound" in (register.headers.get("Supported") or "")
    assert "alias" in register.vias[0].params and "rport" in register.vias[0].params


@pytest.mark.parametrize(
    ("name", "header", "method"),
    [
        ("register-authorized.sip", "Authorization", "REGISTER"),
        ("invite-authorized.sip", "Proxy-Authorization", "INVITE"),
    ],
)
def test_linphone_digest_verifies(name: str, header: str, method: str) -> None:
    request = load(name)
    credentials = Credentials.parse(request.headers.get(header) or "")
    assert credentials.algorithm is DigestAlgorithm.MD5 and credentials.qop == "auth"
    assert credentials.matches(
        ha1(DigestAlgorithm.MD5, "alice", "127.0.0.1", "alice-secret"), method
    )
    assert not credentials.matches(ha1(DigestAlgorithm.MD5, "alice", "127.0.0.1", "wrong"), method)


def test_invite_offers_zrtp_over_rtp_avp() -> None:
    invite = load("invite.sip")
    sdp = SessionDescription.parse(invite.body)
    (audio,) = sdp.media
    assert audio.protocol == "RTP/AVP"
    assert audio.zrtp_hash is not None and audio.zrtp_hash.startswith("1.10 ")
    assert len(audio.zrtp_hash.split()[1]) == 64
    assert sdp.serialize() == invite.body
