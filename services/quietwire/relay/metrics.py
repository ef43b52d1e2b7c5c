"""The relay's Prometheus metrics, each label bound once: a ``labels()`` lookup
per packet costs more than the forwarding."""

from prometheus_client import Counter, Gauge

PACKETS = Counter("quietwire_relay_packets", "Packets received by the relay", ["outcome"])
CALLS = Gauge("quietwire_relay_calls", "Calls with ports allocated")
FORWARDED, STRANGER, NO_DESTINATION, SEND_ERROR = (
    PACKETS.labels(outcome) for outcome in ("forwarded", "stranger", "no-destination", "send-error")
)
REFUSED_ADDRESS = Counter(
    "quietwire_relay_refused_addresses",
    "Phone addresses the relay's address policy refused (names, loopback, denied networks)",
)
