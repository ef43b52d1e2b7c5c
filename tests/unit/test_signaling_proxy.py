"""The proxy's pure pieces: Record-Route tokens, arrival checks, the domain's own
answers, dialog membership, what an authenticated user may send, offers in a
dialog, messages we build, response selection (RFC 3261 section 16.7),
transaction caps, the error log."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from quietwire.protocols.sip import uri
from quietwire.protocols.sip.message import Request, Response, parse_message, reply
from quietwire.protocols.sip.transaction import ServerKey, ServerNonInviteTransaction
from quietwire.signaling.builders import best_response, cancel_for, forwarded, refused
from quietwire.signaling.contexts import Context, ServerTable
from quietwire.signaling.dialogs import Dialog, Party, Side
from quietwire.signaling.failures import RETRY_AFTER, refusal_answer
from quietwire.signaling.flows import Flow
from quietwire.signaling.media import OfferKind, Refusal
from quietwire.signaling.routing import (
    ALLOW,
    ProxyAddress,
    arrival_refusal,
    domain_answer,
    identity_refusal,
    in_dialog_offer,
    membership,
    party_refusal,
)
from quietwire.signaling.tokens import RouteTokens

from tests.unit.test_sip_transactions import Clock

KEY = b"k" * 32
US = ProxyAddress("example.org", "example.org", {"TLS": 5061, "TCP": 5060, "UDP": 5060}, "r1")
TOKENS = RouteTokens(KEY, "example.org", US.ports, lifetime=3600)
NOW = 1_700_000_000.0


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@example.org",
    from_: str = "<sip:alice@example.org>;tag=at",
    to: str = "<sip:bob@example.org>",
    call_id: str = "c1",
    extra: str = "",
    body: bytes = b"",
) -> Request:
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {from_}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def routed(token_routes: list[str], **kwargs: str) -> Request:
    extra = "".join(f"Route: {r}\r\n" for r in reversed(token_routes))
    return request(extra=extra, **kwargs)


# -- Record-Route tokens -----------------------------------------------------------------


def test_token_round_trip_and_direction() -> None:
    token = TOKENS.issue("r1.1", "r2.7", "at", "c1", NOW)
    (route,) = TOKENS.record_routes(token)
    assert route.startswith("<sip:example.org:5061;transport=tls;lr;")
    back = TOKENS.take(routed([route], call_id="c1"), NOW + 10)
    assert back == token
    assert back.toward("at") == "r2.7"  # from the caller: to the callee's flow
    assert back.toward("bt") == "r1.1"


def test_token_signature_is_the_hmac_of_its_labelled_fields() -> None:
    """The signature replicas have always written (a rolling upgrade keeps every
    dialog's route): HMAC-SHA-256 over the label and the length-prefixed fields."""
    token = TOKENS.issue("r1.1", "r2.7", "at", "c1", NOW)
    (route,) = TOKENS.record_routes(token)
    fields = ("c1", "r1.1", "r2.7", "at", str(token.expires))
    data = b"quietwire record-route v2\x00" + b"".join(f"{len(f)}:{f}".encode() for f in fields)
    expected = hmac.new(KEY, data, hashlib.sha256).hexdigest()[:32]
    assert f";qws={expected}>" in route
    assert token.sign(TOKENS.mac) == expected


def test_tokens_taken_stay_out_of_the_cache_of_parsed_uris() -> None:
    """Each dialog's Route is its own: parsed apart, so dialogs do not fill the
    cache of URIs that repeat (users, contacts), nor the process's memory."""

    def take(n: int) -> None:
        token = TOKENS.issue("r1.1", "r2.7", "at", f"cached-{n}", NOW)
        (route,) = TOKENS.record_routes(token)
        assert TOKENS.take(routed([route], call_id=f"cached-{n}"), NOW) == token

    take(0)
    cached = uri._parse.cache_info().currsize
    for n in range(1, 50):
        take(n)
    assert uri._parse.cache_info().currsize == cached


def test_token_is_bound_to_its_call_id() -> None:
    (route,) = TOKENS.record_routes(TOKENS.issue("r1.1", "r2.7", "at", "c1", NOW))
    other = routed([route], call_id="c2")
    assert TOKENS.take(other, NOW) is None
    assert other.headers.get_all("Route") == []  # ours, popped even when refused


def test_token_expires() -> None:
    (route,) = TOKENS.record_routes(TOKENS.issue("r1.1", "r2.7", "at", "c1", NOW))
    assert TOKENS.take(routed([route]), NOW + 3600) is not None
    assert TOKENS.take(routed([route]), NOW + 3601) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("qwb=r2.7", "qwb=r2.8"),  # another flow
        ("ftag=at", "ftag=xt"),
        ("qwe=1700003600", "qwe=1800003600"),  # a longer life
        ("qwe=1700003600", "qwe=" + "9" * 5000),  # digits past int()'s limit
    ],
)
def test_token_tampering_is_refused(old: str, new: str) -> None:
    (route,) = TOKENS.record_routes(TOKENS.issue("r1.1", "r2.7", "at", "c1", NOW))
    assert old in route
    assert TOKENS.take(routed([route.replace(old, new)]), NOW) is None


def test_token_with_another_key_is_refused() -> None:
    stranger = RouteTokens(b"x" * 32, "example.org", US.ports, lifetime=3600)
    (route,) = stranger.record_routes(stranger.issue("r1.1", "r2.7", "at", "c1", NOW))
    assert TOKENS.take(routed([route]), NOW) is None


def test_double_record_route_when_transports_differ() -> None:
    token = TOKENS.issue("r1.t3", "r2.7", "at", "c1", NOW)
    routes = TOKENS.record_routes(token)
    assert [r.split(";transport=")[1][:3] for r in routes] == ["tcp", "tls"]
    message = routed(routes)
    message.headers.add("Route", "<sip:next.example.net;lr>")
    assert TOKENS.take(message, NOW) == token
    assert message.headers.get_all("Route") == ["<sip:next.example.net;lr>"]


def test_record_route_names_both_flows_for_the_requests_call() -> None:
    out = request(call_id="c9")
    TOKENS.record_route(out, "r1.t3", "r2.7", NOW)
    routes = out.headers.get_all("Record-Route")
    assert len(routes) == 2  # the sides' transports differ
    back = TOKENS.take(routed(list(reversed(routes)), call_id="c9"), NOW)
    assert back == TOKENS.issue("r1.t3", "r2.7", "at", "c9", NOW)


def test_foreign_route_is_left_alone() -> None:
    message = routed(["<sip:proxy.example.net;lr>"])
    assert TOKENS.take(message, NOW) is None
    assert message.headers.get_all("Route") == ["<sip:proxy.example.net;lr>"]


# -- arrival (RFC 3261 section 16.3) ---------------------------------------------------------


def test_max_forwards_spent_is_483_once_on_arrival() -> None:
    spent = request()
    spent.headers.set("Max-Forwards", "0")
    refusal = arrival_refusal(spent, US)
    assert refusal is not None and refusal.status == 483 and refusal.to.tag
    options = request("OPTIONS", "sip:example.org")
    options.headers.set("Max-Forwards", "0")
    assert arrival_refusal(options, US) is None  # ours to answer (RFC 3261 16.3 step 3)
    assert arrival_refusal(request(), US) is None


def test_a_method_we_do_not_carry_is_405_with_allow() -> None:
    refusal = arrival_refusal(request("PUBLISH"), US)
    assert refusal is not None and refusal.status == 405 and refusal.to.tag
    assert refusal.headers.get("Allow") == ALLOW
    assert "REGISTER" in ALLOW and "PUBLISH" not in ALLOW


def test_the_domain_answers_options_only() -> None:
    ok, outcome = domain_answer(request("OPTIONS", "sip:example.org"))
    assert (ok.status, outcome) == (200, "answered")
    assert ok.headers.get("Allow") == ALLOW
    assert ok.headers.get("Supported") == "outbound, gruu, path"
    missing, outcome = domain_answer(request("MESSAGE", "sip:example.org"))
    assert (missing.status, outcome) == (404, "not-found")


def test_our_own_via_is_a_loop() -> None:
    looped = request()
    looped.headers.add("Via", "SIP/2.0/TLS example.org:5061;branch=z9hG4bKqw1;qwr=r2", first=True)
    refusal = arrival_refusal(looped, US)
    assert refusal is not None and refusal.status == 482


# -- dialogs: who may speak in one -------------------------------------------------------------

DIALOG = Dialog(
    "c1",
    1,
    Side("r1.1", "<sip:alice@192.0.2.1>", "<sip:alice@example.org>;tag=at"),
    Side("r2.7", "<sip:bob@192.0.2.2>", "<sip:bob@example.org>;tag=bt"),
)


def test_dialog_party_by_call_id_and_both_tags() -> None:
    from_alice = request("BYE", to="<sip:bob@example.org>;tag=bt")
    assert DIALOG.party(from_alice) is Party.CALLER
    from_bob = request(
        "BYE", from_="<sip:bob@example.org>;tag=bt", to="<sip:alice@example.org>;tag=at"
    )
    assert DIALOG.party(from_bob) is Party.CALLEE
    assert DIALOG.party(request("BYE", to="<sip:bob@example.org>;tag=made-up")) is None
    assert DIALOG.party(request("BYE", to="<sip:bob@example.org>;tag=bt", call_id="c2")) is None


def test_membership_trusts_only_the_party_on_its_flow() -> None:
    bye = request("BYE", to="<sip:bob@example.org>;tag=bt")
    assert membership(DIALOG, bye, "r1.1").trusted
    elsewhere = membership(DIALOG, bye, "r3.9")
    assert elsewhere.party is Party.CALLER and not elsewhere.trusted
    assert not membership(DIALOG, bye, "r2.7").trusted  # bob's flow, alice's tags
    assert not membership(None, bye, "r1.1").trusted


def test_identity_and_party_refusals() -> None:
    bye = request("BYE", to="<sip:bob@example.org>;tag=bt")
    assert identity_refusal(bye, "alice", "example.org", in_dialog=True) is None
    assert identity_refusal(bye, "carol", "example.org", in_dialog=True) == (
        403,
        "From Is Not You",
    )
    foreign = request(uri="sip:bob@elsewhere.example")
    assert identity_refusal(foreign, "alice", "example.org", in_dialog=False) == (
        403,
        "No Relaying",
    )
    posing = request("BYE", from_="<sip:carol@example.org>;tag=at", to=bye.headers.get("To") or "")
    member = membership(DIALOG, posing, "r9.1")
    assert party_refusal(DIALOG, member, posing)  # carol with alice's tags
    assert not party_refusal(DIALOG, membership(DIALOG, bye, "r9.1"), bye)
    assert not party_refusal(None, membership(None, posing, "r9.1"), posing)


def test_offer_in_a_dialog_is_planned_only_in_its_own_call() -> None:
    sdp = b"v=0\r\n"
    reinvite = request("INVITE", to="<sip:bob@example.org>;tag=bt", body=sdp)
    assert in_dialog_offer(reinvite, membership(DIALOG, reinvite, "r1.1")) is OfferKind.REOFFER
    stray = request("UPDATE", to="<sip:bob@example.org>;tag=zz", body=sdp)
    refusal = in_dialog_offer(stray, membership(DIALOG, stray, "r1.1"))
    assert isinstance(refusal, Refusal) and refusal.status == 488
    info = request("INFO", to="<sip:bob@example.org>;tag=zz", body=sdp)
    assert in_dialog_offer(info, membership(DIALOG, info, "r1.1")) is None


def test_reinvite_without_sdp_asks_for_an_offer_only_in_its_own_call() -> None:
    """RFC 3261 section 14.1: its 2xx carries the offer, planned like any re-offer."""
    solicits = request("INVITE", to="<sip:bob@example.org>;tag=bt")
    assert in_dialog_offer(solicits, membership(DIALOG, solicits, "r1.1")) is OfferKind.REOFFER
    stray = request("INVITE", to="<sip:bob@example.org>;tag=zz")
    refusal = in_dialog_offer(stray, membership(DIALOG, stray, "r1.1"))
    assert isinstance(refusal, Refusal) and refusal.status == 488
    refresh = request("UPDATE", to="<sip:bob@example.org>;tag=bt")  # no offer, no answer
    assert in_dialog_offer(refresh, membership(DIALOG, refresh, "r1.1")) is None


# -- messages we build ------------------------------------------------------------------------


def test_forwarded_copy() -> None:
    original = request()
    out = forwarded(original, "sip:bob@192.0.2.2", US.via("r2.t4", "z9hG4bKqwx"))
    assert out.uri == "sip:bob@192.0.2.2" and out.headers.get("Max-Forwards") == "69"
    assert out.vias[0].port == 5060 and out.vias[0].params["qwr"] == "r1"
    assert original.headers.get("Max-Forwards") == "70" and len(original.vias) == 1
    original.headers.remove("Max-Forwards")
    assert forwarded(original, None, US.via("r2.7")).headers.get("Max-Forwards") == "69"


def test_cancel_matches_its_invite() -> None:
    invite = request(extra="Route: <sip:next.example.net;lr>\r\n")
    invite.headers.add("Via", US.via("r2.7", "z9hG4bKqwb"), first=True)
    cancel = cancel_for(invite, "answered elsewhere")
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert str(cancel.cseq) == "1 CANCEL" and cancel.call_id == invite.call_id
    assert cancel.headers.get_all("Route") == ["<sip:next.example.net;lr>"]
    assert cancel.headers.get("Reason") == 'SIP;cause=200;text="answered elsewhere"'


def test_refusal_carries_a_warning() -> None:
    response = refused(request(), Refusal(488, "quietwire: plain RTP refused"), "example.org")
    assert (response.status, response.reason) == (488, "Not Acceptable Here")
    assert response.headers.get("Warning") == '399 example.org "quietwire: plain RTP refused"'


def test_a_planner_away_says_when_to_try_again() -> None:
    away = refusal_answer(request(), Refusal(503, "quietwire: no relay"), "example.org")
    assert away.status == 503 and away.headers.get("Retry-After") == str(RETRY_AFTER)
    assert away.headers.get("Warning") == '399 example.org "quietwire: no relay"'
    policy = refusal_answer(request(), Refusal(488, "quietwire: plain RTP"), "example.org")
    assert policy.status == 488 and policy.headers.get("Retry-After") is None


# -- response selection (RFC 3261 section 16.7 step 6) ---------------------------------------


def finals(*statuses: int) -> list[Response]:
    return [reply(request(), s, "x") for s in statuses]


@pytest.mark.parametrize(
    ("statuses", "best"),
    [
        ((), 480),
        ((486, 404), 404),
        ((503, 486), 486),
        ((503,), 500),  # a 503 is never forwarded as such
        ((500, 503), 500),
        ((404, 603, 600), 603),  # the first 6xx wins
        ((302, 404), 302),
        ((408,), 408),
    ],
)
def test_best_response(statuses: tuple[int, ...], best: int) -> None:
    assert best_response(finals(*statuses), request()).status == best


# -- live transactions -------------------------------------------------------------------------


def context(branch: str, source: str) -> Context:
    message = request("MESSAGE")
    message.headers.set("Via", f"SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK{branch}")
    server = ServerNonInviteTransaction(message, True, Clock())
    flow = Flow("r1.1", "TLS", (source, 5061), None)
    return Context(message, server, flow, ServerKey.of(message), source)


async def test_server_table_caps_per_source_and_in_total() -> None:
    table = ServerTable(total=3, per_source=2)
    first, second = context("a", "192.0.2.1"), context("b", "192.0.2.1")
    for c in (first, second):
        assert table.admits(c.source)
        table.add(c)
    assert not table.admits("192.0.2.1")
    assert table.admits("192.0.2.2")
    table.add(context("c", "192.0.2.2"))
    assert not table.admits("192.0.2.3")  # the total
    assert table.remove(first.key) is first
    assert table.remove(first.key) is None
    assert table.from_source("192.0.2.1") == 1 and len(table) == 2
    assert table.admits("192.0.2.1")
