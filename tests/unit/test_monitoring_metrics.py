"""The series the chart's alerts need: certificate expiry, relay ports, SIP refusals."""

from __future__ import annotations

import socket
from pathlib import Path

from cryptography import x509
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from quietwire.embedded.pki import ensure_pki
from quietwire.protocols.sip.message import Request, Response, parse_message, reply
from quietwire.relay.metrics import publish_capacity
from quietwire.relay.ports import PortPool
from quietwire.runtime.metrics import Series
from quietwire.runtime.tls import TlsFiles, publish_expiry, server_credentials
from quietwire.signaling.flows import Flow

EXPIRY = "quietwire_tls_certificate_expiry_timestamp_seconds"
SENT = "quietwire_sip_responses_sent_total"


def _not_after(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


def test_certificate_expiry_is_the_first_of_chain_and_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "127.0.0.1")
    server_credentials(TlsFiles(pki.grpc_cert, pki.grpc_key, pki.ca))
    first = min(_not_after(pki.grpc_cert), _not_after(pki.ca))
    assert REGISTRY.get_sample_value(EXPIRY, {"cert": "grpc"}) == first

    publish_expiry("sip", pki.sip_cert)
    assert REGISTRY.get_sample_value(EXPIRY, {"cert": "sip"}) == _not_after(pki.sip_cert)


def test_unreadable_certificate_leaves_the_last_known_expiry(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "127.0.0.1")
    publish_expiry("test", pki.sip_cert)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    publish_expiry("test", broken)
    publish_expiry("test", tmp_path / "missing.pem")
    assert REGISTRY.get_sample_value(EXPIRY, {"cert": "test"}) == _not_after(pki.sip_cert)


def _free_range(pairs: int) -> tuple[int, int]:
    """An even port with ``pairs`` pairs above it that are free right now (loopback)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1] & ~1
        if first + 2 * pairs < 65535:
            return first, first + 2 * pairs - 1
    raise AssertionError("no port range")


def test_relay_ports_left_are_read_at_each_scrape() -> None:
    first, last = _free_range(4)
    pool = PortPool("127.0.0.1", first, last)
    publish_capacity(pool, 2)
    assert REGISTRY.get_sample_value("quietwire_relay_port_pairs") == 4
    assert REGISTRY.get_sample_value("quietwire_relay_capacity") == 2
    assert REGISTRY.get_sample_value("quietwire_relay_port_pairs_free") == 4
    pair = pool.take()
    try:
        assert REGISTRY.get_sample_value("quietwire_relay_port_pairs_free") == 3
    finally:
        pool.give_back(pair)
    assert REGISTRY.get_sample_value("quietwire_relay_port_pairs_free") == 4


def _request(method: str) -> Request:
    message = parse_message(
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-1\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: metrics-test\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


def _sent(method: str, status: str) -> float:
    return REGISTRY.get_sample_value(SENT, {"method": method, "status": status}) or 0.0


def test_responses_sent_are_counted_by_method_and_status() -> None:
    flow = Flow("f1", "TLS", ("192.0.2.1", 5061), None)
    before = _sent("INVITE", "503"), _sent("other", "488"), _sent("INVITE", "200")
    assert flow.send_message(reply(_request("INVITE"), 503, "Service Unavailable"))
    # A stranger's made-up method is counted as "other": it cannot grow the series.
    assert flow.send_message(reply(_request("FROBNICATE"), 488, "Not Acceptable Here"))
    assert flow.send_message(_request("INVITE"))  # requests are not responses
    after = _sent("INVITE", "503"), _sent("other", "488"), _sent("INVITE", "200")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 0]
    assert REGISTRY.get_sample_value(SENT, {"method": "FROBNICATE", "status": "488"}) is None


def test_a_response_that_cannot_be_queued_is_not_counted() -> None:
    flow = Flow("f2", "TLS", ("192.0.2.1", 5061), None)
    flow.closed.set()
    before = _sent("BYE", "481")
    response = reply(_request("BYE"), 481, "Call/Transaction Does Not Exist")
    assert isinstance(response, Response)
    assert not flow.send_message(response)
    assert _sent("BYE", "481") == before


def test_series_counted_without_a_lock_are_what_a_scrape_reads() -> None:
    counter = Counter("quietwire_test_series", "test", ["kind"], registry=None)
    registry = CollectorRegistry()
    registry.register(counter)
    series = Series(counter)
    series("a").inc()
    series("a").inc(2)
    counter.labels("a").inc()  # the same series, the long way
    series("b").inc()
    assert series("a") is series("a")
    assert registry.get_sample_value("quietwire_test_series_total", {"kind": "a"}) == 4
    assert registry.get_sample_value("quietwire_test_series_total", {"kind": "b"}) == 1
    assert b'quietwire_test_series_total{kind="a"} 4.0' in generate_latest(registry)
