"""The Prometheus endpoint each service exposes (``QW_METRICS_PORT``, 0 = off), or on a
listening socket its supervisor hands it (``QW_METRICS_FD``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import Counter, Gauge, Info, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer

from quietwire import __version__

BUILD = Info("quietwire_build", "quietwire version and service")


class Count:
    """One series of a counter, counted without a lock.

    prometheus_client takes a mutex for every increment (its metrics may be
    shared by threads); a series counted once per SIP message on the event loop
    thread does not need one. This value takes the place of the series' own
    (``Counter`` keeps it in ``_value`` and reads it when scraped): increments
    come from the event loop thread only, and the scrape thread reads a float,
    which it sees whole.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def get(self) -> float:
        return self.value

    def set_exemplar(self, exemplar: object) -> None:
        """Exemplars are not kept."""

    def get_exemplar(self) -> None:
        return None


def unlocked(metric: Counter | Gauge) -> Count:
    """The value of an unlabelled counter or gauge, to count without a lock
    (:class:`Count`; from the event loop thread only): ``unlocked(Gauge(...)).inc()``."""
    count = Count()
    metric._value = count  # what the metric reports
    return count


class Series:
    """The series of a labelled counter, each resolved once and counted without a
    lock (:class:`Count`): ``series("a").inc()`` is ``counter.labels("a").inc()``
    without ``labels()``'s checks and tuple nor the increment's mutex. Every
    increment of these series must come from the event loop thread. It holds no
    more series than the counter does."""

    __slots__ = ("_counts", "metric")

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self._counts: dict[tuple[str, ...], Count] = {}

    def __call__(self, *values: str) -> Count:
        count = self._counts.get(values)
        if count is None:
            count = self._counts[values] = unlocked(self.metric.labels(*values))
        return count


@dataclass(slots=True)
class MetricsEndpoint:
    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access line per scrape on stderr (our logs are JSON)."""


def _on_socket(listener: socket.socket) -> MetricsEndpoint:
    """Serve ``/metrics`` on a socket already bound and listening."""
    host, port = listener.getsockname()[:2]
    server = ThreadingWSGIServer((host, port), _QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_name, server.server_port = str(host), int(port)
    server.setup_environ()
    server.set_app(make_wsgi_app())
    thread = Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsEndpoint(server, thread)


def start_metrics(
    service: str, bind: str, port: int, listener_fd: int | None = None
) -> MetricsEndpoint | None:
    BUILD.info({"version": __version__, "service": service})
    if listener_fd is not None:
        return _on_socket(socket.socket(fileno=listener_fd))
    if port == 0:
        return None
    server, thread = start_http_server(port, addr=bind)
    return MetricsEndpoint(server, thread)
