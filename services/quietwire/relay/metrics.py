"""The relay's Prometheus metrics, each label bound once: a ``labels()`` lookup
per packet costs more than the forwarding."""

from prometheus_client import Counter, Gauge

from quietwire.relay.ports import PortPool

PACKETS = Counter("quietwire_relay_packets", "Packets received by the relay", ["outcome"])
CALLS = Gauge("quietwire_relay_calls", "Calls with ports allocated")
CAPACITY = Gauge("quietwire_relay_capacity", "Calls this relay takes (keyagreement balances on it)")
PORT_PAIRS = Gauge("quietwire_relay_port_pairs", "RTP/RTCP port pairs in the relay's range")
PORT_PAIRS_FREE = Gauge("quietwire_relay_port_pairs_free", "Port pairs free for new calls")


def publish_capacity(pool: PortPool, capacity: int) -> None:
    """Export the pool's size, what is left of it (read at each scrape) and the capacity."""
    CAPACITY.set(capacity)
    PORT_PAIRS.set(pool.size)
    PORT_PAIRS_FREE.set_function(lambda: pool.available)


FORWARDED, STRANGER, NO_DESTINATION, SEND_ERROR = (
    PACKETS.labels(outcome) for outcome in ("forwarded", "stranger", "no-destination", "send-error")
)
REFUSED_ADDRESS = Counter(
    "quietwire_relay_refused_addresses",
    "Phone addresses the relay's address policy refused (names, loopback, denied networks)",
)
