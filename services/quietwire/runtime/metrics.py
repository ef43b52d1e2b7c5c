"""The Prometheus endpoint each service exposes (``QW_METRICS_PORT``, 0 = off), or on a
listening socket its supervisor hands it (``QW_METRICS_FD``)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from threading import Thread
from typing import Any, Generic, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import Info, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics import MetricWrapperBase

from quietwire import __version__

BUILD = Info("quietwire_build", "quietwire version and service")

M = TypeVar("M", bound=MetricWrapperBase)


class Series(Generic[M]):
    """The series of a labelled metric, each resolved once: ``series("a").inc()``
    is ``metric.labels("a").inc()`` without ``labels()``'s checks, lock and
    tuple on every message. It holds no more series than the metric does."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


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
